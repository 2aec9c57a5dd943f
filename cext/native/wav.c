/* Recorder's WAV writer. Theory of operation.
 *
 * The problem. The media thread produces 20 ms of PCM16 per recording per tick and must never wait for a
 * disk: a stalled write() (journal commit, slow NFS, full device) would delay every packet of every call
 * on that core. And "nothing lost": a crash or kill -9 must leave a WAV that opens, with at most about a
 * second of audio missing. Many hundreds of recordings may be open at once.
 *
 * Producer side (wav_write, the media thread). Each writer owns a single-producer/single-consumer ring of
 * WAV_RING_SECONDS of audio (64 KiB for 8 kHz mono), allocated and pre-faulted at open. A write is one or
 * two memcpy()s and a release store of the head position: no lock, no system call, no allocation. When the
 * ring is full (the disk stalled for seconds) the frames that do not fit are dropped and counted, which is
 * the only failure the media thread ever sees.
 *
 * Consumer side: ONE writer thread shared by every open file, started on the first wav_open() and then
 * sleeping on a condition variable while no file is open. Why one and not one per file: the work is tiny
 * (8 kHz mono is 16 kB/s, so 1000 recordings are 16 MB/s of page-cache writes, a few percent of one core),
 * while a thread per file costs a stack, a scheduler entity and its own timer wake-ups, times hundreds;
 * one thread makes one wake-up per tick whatever the number of files. What it gives up is isolation: a
 * stall on one file delays the others' flushes, but never the media thread, and every ring rides out
 * WAV_RING_SECONDS of stall before dropping. (The engine and the standalone Python binding each link this
 * file, so each has its own thread.)
 *
 * Each file is flushed every FLUSH_NS (250 ms, staggered by open time), or sooner when the thread, which
 * looks at every ring each TICK_NS (20 ms), finds one a quarter full (a producer faster than real time,
 * such as a tool writing a file from Python). A flush sends the pending bytes in one pwritev() at the file
 * offset they belong to (44 + bytes already written), then re-patches the header's RIFF size (offset 4)
 * and data size (offset 40) with pwrite(). Data is always written before the header that covers it, so at
 * any instant the header describes a prefix of what is in the file; the page cache survives kill -9, so a
 * killed process loses only what was still in the ring: at most FLUSH_NS plus one tick (well under the 1 s
 * the recorder promises). Power loss is out of scope until wav_close(), which fdatasync()s before it
 * reports the file done.
 *
 * Errors. The first failed write (ENOSPC, EIO, EFBIG...) marks the file failed: whole frames written so far
 * stay (a frame cut by a short write is not counted and is truncated away at close), the header is patched
 * to them, and every later frame is counted as dropped. There are no gaps mid-file: a recording never
 * silently skips a stretch of time and resumes. The errno is reported by wav_stats() and wav_close().
 * WAV sizes are 32-bit, so a file stops accepting frames at 4 GiB (EFBIG, counted the same way).
 *
 * Closing is a handshake: wav_close() sets the writer's closing flag and wakes the thread, which drains
 * the ring, patches the header, drops the writer from its list and signals; the caller then syncs, closes
 * and frees. After fork() the child has no writer thread: writers inherited from the parent are closed
 * without flushing (their data belongs to the parent), and the first wav_open() in the child starts a
 * fresh thread.
 */
#define _GNU_SOURCE
#include "wav.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_NS 250000000ull     /* data + header patch cadence per file */
#define TICK_NS 20000000ull       /* how often the thread looks for rings filling up faster than that */
#define MAX_DATA_BYTES 0xFFFFFFDBull /* 2^32 - 1 - 36: the largest data chunk a RIFF size can describe */

struct wav_writer {
    /* written by the producer (media thread) */
    _Atomic uint64_t head;        /* bytes ever put into the ring */
    _Atomic uint64_t dropped_in;  /* frames refused by wav_write() */
    char pad0[64];
    /* written by the writer thread */
    _Atomic uint64_t tail;        /* bytes ever taken out of the ring */
    _Atomic uint64_t data_bytes;  /* whole frames on disk, in bytes */
    _Atomic uint64_t dropped_out; /* frames lost to a write error */
    _Atomic int failed;           /* a write failed: stop writing, drop everything from now on */
    uint64_t patched_bytes;       /* data size the header on disk says */
    uint64_t next_flush_ns;
    char pad1[64];
    /* either side */
    _Atomic int error;            /* errno of the first failure, 0 if none */
    _Atomic int closing;
    /* set at open, read-only afterwards */
    uint8_t *ring;
    uint64_t cap, mask, max_bytes;
    int fd, channels, rate, frame_bytes;
    pid_t pid;
    /* guarded by g.lock until adopted, then the thread's own list link */
    int done;
    wav_writer_t *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;          /* the thread: a file was opened or a close requested */
    pthread_cond_t done;          /* closers: a writer has been drained and released */
    wav_writer_t *incoming;       /* opened, not yet adopted by the thread */
    unsigned close_requests;
    int started;
    pid_t pid;                    /* process the thread runs in */
} g;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void init_locks(void)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&g.lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.wake, &ca);
    pthread_cond_init(&g.done, &ca);
    pthread_condattr_destroy(&ca);
}

/* fork() happens with g.lock held, so the child inherits a consistent g (the thread never holds the lock
 * across I/O, so this waits a few microseconds at most). */
static void before_fork(void)
{
    pthread_mutex_lock(&g.lock);
}

static void after_fork_parent(void)
{
    pthread_mutex_unlock(&g.lock);
}

static void after_fork_child(void)
{
    /* Only the forking thread survives: the writer thread and what it was to adopt are gone. The lock and
     * the condition variables start afresh: the parent's writer thread may have been waiting on one of
     * them as fork() copied it, and a copied waiter that does not exist would swallow the child's first
     * signal (its own writer thread would then sleep forever, and wav_close wait forever). */
    g.incoming = NULL;
    g.started = 0;
    init_locks();
}

static void init_once(void)
{
    init_locks();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static void put_le16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void set_error(wav_writer_t *w, int e)
{
    int zero = 0;
    atomic_compare_exchange_strong(&w->error, &zero, e);
}

static void fail(wav_writer_t *w, int e)
{
    set_error(w, e);
    atomic_store_explicit(&w->failed, 1, memory_order_relaxed);
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, off_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* ---- producer side ------------------------------------------------------------------------------- */

static void copy_in(uint8_t *dst, const int16_t *src, size_t bytes)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const uint8_t *s = (const uint8_t *)src;
    for (size_t i = 0; i + 1 < bytes; i += 2) {
        dst[i] = s[i + 1];
        dst[i + 1] = s[i];
    }
#else
    memcpy(dst, src, bytes);
#endif
}

int wav_write(wav_writer_t *w, const int16_t *pcm, int frames)
{
    if (!w || !pcm || frames <= 0)
        return 0;
    if (atomic_load_explicit(&w->failed, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&w->dropped_in, (uint64_t)frames, memory_order_relaxed);
        return 0;
    }
    uint64_t fb = (uint64_t)w->frame_bytes;
    uint64_t head = atomic_load_explicit(&w->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&w->tail, memory_order_acquire);
    uint64_t room = w->cap - (head - tail);
    uint64_t left = w->max_bytes - head;  /* head counts every byte ever accepted */
    uint64_t want = (uint64_t)frames * fb;
    uint64_t take = want;
    if (take > room)
        take = room - room % fb;
    if (take > left) {
        take = left;  /* max_bytes is a whole number of frames */
        set_error(w, EFBIG);
    }
    if (take) {
        uint64_t off = head & w->mask;
        uint64_t first = w->cap - off;
        if (first > take)
            first = take;
        copy_in(w->ring + off, pcm, (size_t)first);
        if (take > first)
            copy_in(w->ring, (const int16_t *)((const uint8_t *)pcm + first), (size_t)(take - first));
        atomic_store_explicit(&w->head, head + take, memory_order_release);
    }
    int accepted = (int)(take / fb);
    if (accepted < frames)
        atomic_fetch_add_explicit(&w->dropped_in, (uint64_t)(frames - accepted), memory_order_relaxed);
    return accepted;
}

/* ---- writer thread ------------------------------------------------------------------------------- */

/* Writes everything the producer has published, at the offset it belongs to. */
static void drain(wav_writer_t *w)
{
    uint64_t tail = atomic_load_explicit(&w->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&w->head, memory_order_acquire);
    uint64_t len = head - tail, done = 0, fb = (uint64_t)w->frame_bytes;
    if (!len)
        return;
    uint64_t data = atomic_load_explicit(&w->data_bytes, memory_order_relaxed);
    if (!atomic_load_explicit(&w->failed, memory_order_relaxed)) {
        while (done < len) {
            uint64_t off = (tail + done) & w->mask;
            uint64_t first = w->cap - off;
            if (first > len - done)
                first = len - done;
            struct iovec iov[2] = {
                {.iov_base = w->ring + off, .iov_len = (size_t)first},
                {.iov_base = w->ring, .iov_len = (size_t)(len - done - first)},
            };
            ssize_t n = pwritev(w->fd, iov, iov[1].iov_len ? 2 : 1, (off_t)(WAV_HEADER_BYTES + data + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                fail(w, n < 0 ? errno : EIO);
                break;
            }
            done += (uint64_t)n;
        }
    }
    uint64_t whole = done - done % fb;
    atomic_store_explicit(&w->data_bytes, data + whole, memory_order_relaxed);
    if (whole < len)
        atomic_fetch_add_explicit(&w->dropped_out, (len - whole) / fb, memory_order_relaxed);
    atomic_store_explicit(&w->tail, head, memory_order_release);  /* the ring space is free again */
}

/* RIFF size first, then data size: a reader never sees a data chunk reaching past the RIFF chunk. */
static void patch_header(wav_writer_t *w)
{
    uint64_t data = atomic_load_explicit(&w->data_bytes, memory_order_relaxed);
    uint8_t b[4];
    int e;
    if (data == w->patched_bytes)
        return;
    put_le32(b, (uint32_t)(36 + data));
    e = pwrite_all(w->fd, b, 4, 4);
    if (!e) {
        put_le32(b, (uint32_t)data);
        e = pwrite_all(w->fd, b, 4, 40);
    }
    if (e)
        fail(w, e);
    w->patched_bytes = data;  /* on failure, do not retry every pass */
}

static void *writer_main(void *arg)
{
    wav_writer_t *list = NULL, *w, **pp;
    (void)arg;
    pthread_mutex_lock(&g.lock);
    for (;;) {
        while (g.incoming) {
            w = g.incoming;
            g.incoming = w->next;
            w->next = list;
            list = w;
        }
        if (!list) {
            pthread_cond_wait(&g.wake, &g.lock);
            continue;
        }
        unsigned seen = g.close_requests;
        pthread_mutex_unlock(&g.lock);

        uint64_t now = now_ns(), next = now + TICK_NS;
        for (pp = &list; (w = *pp);) {
            int closing = atomic_load_explicit(&w->closing, memory_order_acquire);
            uint64_t pending = atomic_load_explicit(&w->head, memory_order_relaxed)
                               - atomic_load_explicit(&w->tail, memory_order_relaxed);
            if (closing || now >= w->next_flush_ns || pending >= w->cap / 4) {
                drain(w);
                patch_header(w);
                w->next_flush_ns = now + FLUSH_NS;
            }
            if (closing) {
                *pp = w->next;
                pthread_mutex_lock(&g.lock);
                w->done = 1;
                pthread_cond_broadcast(&g.done);
                pthread_mutex_unlock(&g.lock);
                continue;  /* w belongs to its closer from here on */
            }
            if (w->next_flush_ns < next)
                next = w->next_flush_ns;
            pp = &w->next;
        }

        pthread_mutex_lock(&g.lock);
        if (!g.incoming && g.close_requests == seen) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                                  .tv_nsec = (long)(next % 1000000000ull)};
            pthread_cond_timedwait(&g.wake, &g.lock, &ts);
        }
    }
    return NULL;
}

/* Called with g.lock held. */
static int ensure_thread(void)
{
    pthread_t t;
    sigset_t all, old;
    int e;
    if (g.started && g.pid == getpid())
        return 0;
    /* Signals belong to the process's own threads (Python's handlers run in the main thread). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e = pthread_create(&t, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e)
        return e;
    pthread_setname_np(t, "wav-writer");
    pthread_detach(t);
    g.started = 1;
    g.pid = getpid();
    return 0;
}

/* ---- open / stats / close ------------------------------------------------------------------------ */

wav_writer_t *wav_open(const char *path, int channels, int sample_rate, int *err)
{
    wav_writer_t *w = NULL;
    uint8_t h[WAV_HEADER_BYTES];
    uint64_t need, cap = 4096;
    int e = 0;

    if (!path || (channels != 1 && channels != 2) || sample_rate <= 0 || sample_rate > 768000) {
        e = EINVAL;
        goto fail;
    }
    pthread_once(&g_once, init_once);
    w = calloc(1, sizeof *w);
    if (!w) {
        e = ENOMEM;
        goto fail;
    }
    w->fd = -1;
    w->channels = channels;
    w->rate = sample_rate;
    w->frame_bytes = 2 * channels;
    w->max_bytes = MAX_DATA_BYTES - MAX_DATA_BYTES % (uint64_t)w->frame_bytes;
    w->pid = getpid();
    need = (uint64_t)sample_rate * (uint64_t)w->frame_bytes * WAV_RING_SECONDS;
    while (cap < need)
        cap <<= 1;
    w->cap = cap;
    w->mask = cap - 1;
    w->ring = malloc((size_t)cap);
    if (!w->ring) {
        e = ENOMEM;
        goto fail;
    }
    memset(w->ring, 0, (size_t)cap);  /* fault the pages in now, not in the media thread */

    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        e = errno;
        goto fail;
    }
    memcpy(h, "RIFF", 4);
    put_le32(h + 4, 36);
    memcpy(h + 8, "WAVEfmt ", 8);
    put_le32(h + 16, 16);
    put_le16(h + 20, 1);  /* WAVE_FORMAT_PCM */
    put_le16(h + 22, (uint32_t)channels);
    put_le32(h + 24, (uint32_t)sample_rate);
    put_le32(h + 28, (uint32_t)(sample_rate * w->frame_bytes));
    put_le16(h + 32, (uint32_t)w->frame_bytes);
    put_le16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    put_le32(h + 40, 0);
    e = pwrite_all(w->fd, h, sizeof h, 0);
    if (e) {
        unlink(path);  /* do not leave a file that is not a WAV */
        goto fail;
    }

    pthread_mutex_lock(&g.lock);
    e = ensure_thread();
    if (!e) {
        w->next_flush_ns = now_ns() + FLUSH_NS;
        w->next = g.incoming;
        g.incoming = w;
        pthread_cond_signal(&g.wake);
    }
    pthread_mutex_unlock(&g.lock);
    if (e) {
        unlink(path);
        goto fail;
    }
    if (err)
        *err = 0;
    return w;

fail:
    if (w) {
        if (w->fd >= 0)
            close(w->fd);
        free(w->ring);
        free(w);
    }
    if (err)
        *err = e;
    return NULL;
}

void wav_stats(const wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped, int *error)
{
    wav_writer_t *m = (wav_writer_t *)w;  /* atomic loads take non-const pointers in C11 */
    uint64_t fb = (uint64_t)m->frame_bytes;
    if (frames_written)
        *frames_written = atomic_load_explicit(&m->data_bytes, memory_order_relaxed) / fb;
    if (frames_dropped)
        *frames_dropped = atomic_load_explicit(&m->dropped_in, memory_order_relaxed)
                          + atomic_load_explicit(&m->dropped_out, memory_order_relaxed);
    if (error)
        *error = atomic_load_explicit(&m->error, memory_order_relaxed);
}

int wav_close(wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped)
{
    int e;
    if (!w) {
        if (frames_written)
            *frames_written = 0;
        if (frames_dropped)
            *frames_dropped = 0;
        return -EINVAL;
    }
    if (w->pid != getpid()) {
        /* Inherited across fork(): the parent's thread owns the data; release our copies only. */
        set_error(w, ECHILD);
    } else {
        atomic_store_explicit(&w->closing, 1, memory_order_release);
        pthread_mutex_lock(&g.lock);
        g.close_requests++;
        pthread_cond_signal(&g.wake);
        while (!w->done)
            pthread_cond_wait(&g.done, &g.lock);
        pthread_mutex_unlock(&g.lock);

        uint64_t end = WAV_HEADER_BYTES + atomic_load_explicit(&w->data_bytes, memory_order_relaxed);
        if (atomic_load_explicit(&w->failed, memory_order_relaxed) && ftruncate(w->fd, (off_t)end) < 0)
            set_error(w, errno);  /* drops a frame cut in half by the failed write */
        if (fdatasync(w->fd) < 0 && errno != EINVAL)
            set_error(w, errno);
    }
    if (close(w->fd) < 0 && errno != EINTR)
        set_error(w, errno);
    wav_stats(w, frames_written, frames_dropped, &e);
    free(w->ring);
    free(w);
    return -e;
}
