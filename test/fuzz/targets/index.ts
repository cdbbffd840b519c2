/** Every fuzz target, in run order. Adding one: write a FuzzTarget (image formats: imageTarget + a layout) and list it here. */
import type { FuzzTarget } from '../target.js';
import { vhdRead, vhdWrite } from './vhd.js';
import { vhdxRead, vhdxWrite } from './vhdx.js';
import { metafiles } from './meta.js';
import { smbFrames, smbMessages } from './smb.js';
import { qcow2Read } from './qcow2.js';
import { chunkedStream, vhdStream } from './stream.js';
import { httpRequest } from './http.js';
import { qcow2Stream } from './qcow2-stream.js';

export const TARGETS: FuzzTarget[] = [vhdRead, vhdWrite, vhdxRead, vhdxWrite, qcow2Read, vhdStream, qcow2Stream, chunkedStream, httpRequest, metafiles, smbMessages, smbFrames];
