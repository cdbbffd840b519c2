import * as path from 'node:path';
import { makeTempDir } from '../../helpers/tmp.js';
import { raceRounds, Racers } from './lock-racers.js';

describe('stale-lock takeover between processes', () => {
  it('lets exactly one of several processes take over a killed run\'s lock, every time (60 rounds)', async () => {
    const tmp = makeTempDir();
    const image = path.join(tmp.dir, 'disk.vhdx');
    const racers = new Racers(path.resolve('dist'), image, 4);
    try {
      await racers.ready();
      expect(await raceRounds(racers, image + '.vhdsync-lock', 60)).toEqual([]);
    } finally {
      await racers.quit();
      tmp.cleanup();
    }
  });
});
