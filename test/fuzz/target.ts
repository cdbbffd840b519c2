/** What a fuzz target is: how to get its seeds, generate inputs, run one, and keep one as a regression file. */
import type fc from 'fast-check';

export interface FuzzTarget<C = unknown, I = unknown> {
  /** Short name: the folder of its regression files and the key in reports. */
  readonly name: string;
  /** What it exercises, for docs and reports. */
  readonly about: string;
  /** Share of the run's time budget, relative to the other targets. */
  readonly weight: number;
  /** Builds the seeds once per run; a string is the reason the target is skipped here. */
  prepare(): Promise<C | string>;
  arbitrary(ctx: C): fc.Arbitrary<I>;
  /**
   * Runs one input under its allocation cap (withAllocationCap); throws what the code under test threw, or a
   * Violation of a property the target checks itself.
   */
  run(ctx: C, input: I): Promise<void>;
  /** The input as a self-contained regression file. */
  save(ctx: C, input: I): Buffer;
  /** Runs a regression file written by `save`. */
  replay(file: Buffer): Promise<void>;
  /** The input in a line of text (seed name and mutations), for hang reports. */
  describe(ctx: C, input: I): string;
}

/** Erases a target's types for the registry. */
export function defineTarget<C, I>(t: FuzzTarget<C, I>): FuzzTarget {
  return t as unknown as FuzzTarget;
}

/** An input as one line of JSON (bigints as decimal text), for `describe`. */
export function inputText(value: unknown): string {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
}
