/** A body that does not decode, or tensors that cannot be encoded; the message names the tensor. */
export class CodecError extends Error {
  override name = 'CodecError';
}
