// The converter's defaults, apart from the converter: the CLI shows them in its help without loading it.

export const DEFAULT_CHUNK_SIZE = 1 << 20;
/** Enough batches of chunks in flight to keep the threadpool's 4 threads busy while the main thread reads ahead; memory: 2 × this × chunk size. */
export const DEFAULT_JOBS = 16;
