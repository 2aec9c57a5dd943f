/* Recorder's WAV writer: the media thread hands over PCM16 frames without ever touching the disk.
 *
 * wav_write() copies into a per-file lock-free ring and returns at once; one shared writer thread drains
 * every open file's ring with batched pwritev() calls and re-patches the header's sizes at least every
 * 250 ms, so a file cut short by kill -9 is still a valid WAV missing well under 1 s of audio.
 * See wav.c for the theory of operation.
 *
 * Threading contract: wav_write() and wav_stats() may be called from one thread per writer at a time
 * (the ring is single-producer); wav_open() and wav_close() from any thread. wav_close() blocks until
 * the file is on disk, so call it off the media thread's hot path.
 */
#ifndef SOFTSWITCH_WAV_H
#define SOFTSWITCH_WAV_H

#include <stdint.h>

#define WAV_HEADER_BYTES 44
#define WAV_RING_SECONDS 4  /* audio a writer can hold while the disk stalls before it drops */

typedef struct wav_writer wav_writer_t;

/* Creates (truncates) `path` and writes a 44-byte PCM16 header. channels is 1 or 2. Returns NULL and sets
 * *err to an errno value (EINVAL for bad arguments, or the open/write/thread error) on failure. */
wav_writer_t *wav_open(const char *path, int channels, int sample_rate, int *err);

/* Copies `frames` interleaved frames into the ring; never blocks, never allocates, no system call.
 * Returns the frames accepted; the rest (ring full, file failed, or the 4 GiB WAV limit) is counted as
 * dropped. */
int wav_write(wav_writer_t *w, const int16_t *interleaved, int frames);

/* Counters while the file is open: frames on disk so far, frames dropped so far, and 0 or the errno of
 * the first failure (after which the file keeps what was written and further frames are dropped).
 * Any pointer may be NULL. */
void wav_stats(const wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped, int *error);

/* Flushes everything accepted, writes the final header, syncs, closes and frees `w`. Returns 0 or
 * -errno of the first failure (disk full, ...); the counters are filled either way. */
int wav_close(wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped);

#endif
