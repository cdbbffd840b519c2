/** Encoders and decoders of disk streams (raw, VHD in vhd-tool's layout, VHDX, XAPI chunked frames, QCOW2), and forward-only decoders of VHD, QCOW2 and frames; no transport here. */
export { diskContent, contentOfDisk, normalizeRanges, serialReads, type ContentSource, type ByteRange, type DeltaBase } from './content.js';
export { deltaContent, type DeltaMethod } from './delta.js';
export type { EncodedStream, StreamChunk, StreamFormat } from './encoded.js';
export { encode, fullContent } from './encode.js';
export { encodeRaw } from './raw-encoder.js';
export { encodeVhd, STREAM_BLOCK_SIZE } from './vhd-encoder.js';
export { encodeVhdx } from './vhdx-encoder.js';
export { vhdxStreamBlockSize } from './vhdx-block-size.js';
export { encodeChunked } from './chunked-encoder.js';
export { encodeQcow2, type Qcow2EncodeOptions } from './qcow2-encoder.js';
export { ForwardReader } from './forward-reader.js';
export { readVhdStreamHead, type VhdStreamHead } from './vhd-stream.js';
export { vhdStreamContent, applyVhdStream } from './vhd-stream-source.js';
export { rawStreamContent } from './raw-stream-source.js';
export { writeContentOnto, applyChunked, type ApplyOptions } from './apply.js';
export { readQcow2StreamHead, Qcow2StreamWalker, type Qcow2StreamHead, type Qcow2StreamPiece } from './qcow2-stream.js';
export { applyQcow2Stream, qcow2StreamContent, type Qcow2ApplyStats } from './qcow2-stream-source.js';
export { sendToFile, sendToSink, nullSink, writableSink, type ByteSink } from './sink.js';
