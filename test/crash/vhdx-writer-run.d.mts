/** One write of the crash test's writer. */
export interface Write {
  i: number;
  off: number;
  len: number;
  zero: boolean;
}
/** What a killed writer reported. */
export interface Outcome {
  /** Writes reported flushed, in order. */
  done: Write[];
  /** The write started and not reported flushed when the child died. */
  inFlight: Write | null;
}
export function pattern(i: number, len: number): Buffer;
export function applyWrite(model: Buffer, w: Write): void;
export function runWriter(dist: string, image: string, first: number, seed: number, delayMs: number, fromFirstDone: boolean): Promise<Outcome>;
export function tornSectors(content: Buffer, before: Buffer, after: Buffer): number[];
