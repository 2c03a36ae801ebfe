/* The WAL checkpointer: a thread with its own SQLite connection that copies committed WAL
 * frames into the trace file, so that the draining thread never does it inside COMMIT.
 *
 * Why: SQLite's automatic checkpoint runs in the committing connection, after the commit;
 * on bench/churn it copied tens of MiB per commit and stalled the drain for longer than a
 * ring absorbs (the program waited ~0.2 s per run). A passive checkpoint runs concurrently
 * with the one writer (SQLite's WAL locking: the checkpointer takes the CKPT lock, the
 * writer the WRITER lock), so here it costs the drain nothing but a condition signal.
 *
 * Invariants: each connection is used by one thread only (the writer's by the draining
 * thread, this one's by the checkpointer), which SQLite allows unless it was built with
 * SQLITE_THREADSAFE=0 (then mt_ckpt_start refuses and the sink keeps SQLite's automatic
 * checkpoint). A checkpoint never loses anything: the WAL holds every committed frame until
 * a checkpoint copied it, and a reader of a file left with its WAL sees the same rows. */
#include "collector.h"

#include <pthread.h>
#include <sqlite3.h>

#include "host.h"

/* The checkpointer competes with the draining thread for the core the program leaves:
 * at equal priority the drain lost slices and bench/loop's program waited 15-27 times
 * (0.02-0.04 s) instead of ~7 (0.015 s) at nice 10, which still gives the copy ~10% of a
 * contended core (and all of an idle one). At 19 it fell behind and the writer had to copy
 * at WAL_LIMIT_FRAMES (sink.c). */
#define CKPT_NICE 10

static pthread_mutex_t ckpt_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ckpt_cond = PTHREAD_COND_INITIALIZER; /* requested, pass done, or stop */
static bool ckpt_requested, ckpt_running, ckpt_stop;
static sqlite3 *ckpt_db;
static void *ckpt_thread;

static void *ckpt_main(void *arg)
{
    (void)arg;
    mt_host_thread_lower_priority(CKPT_NICE);
    pthread_mutex_lock(&ckpt_lock);
    for (;;) {
        while (!ckpt_requested && !ckpt_stop)
            pthread_cond_wait(&ckpt_cond, &ckpt_lock);
        if (ckpt_stop)
            break;
        ckpt_requested = false;
        ckpt_running = true;
        pthread_mutex_unlock(&ckpt_lock);
        /* Best effort: SQLITE_BUSY (the writer's own checkpoint holds the lock) or an I/O
         * error leaves frames in the WAL, where they are just as safe; the writer's bound
         * (sink.c) and the final checkpoint copy them. */
        sqlite3_wal_checkpoint_v2(ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&ckpt_lock);
        ckpt_running = false;
        pthread_cond_broadcast(&ckpt_cond);
    }
    pthread_mutex_unlock(&ckpt_lock);
    return NULL;
}

bool mt_ckpt_start(const char *path)
{
    if (!sqlite3_threadsafe())
        return false;
    if (sqlite3_open_v2(path, &ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        goto fail;
    /* synchronous=OFF as the writer's (sink.c): a checkpoint would otherwise fsync the WAL
     * before copying and the file after. */
    if (sqlite3_exec(ckpt_db, "PRAGMA synchronous=OFF", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    ckpt_thread = mt_host_thread_start(ckpt_main, NULL);
    if (!ckpt_thread)
        goto fail;
    return true;
fail:
    sqlite3_close(ckpt_db);
    ckpt_db = NULL;
    return false;
}

void mt_ckpt_request(void)
{
    pthread_mutex_lock(&ckpt_lock);
    ckpt_requested = true;
    pthread_cond_signal(&ckpt_cond);
    pthread_mutex_unlock(&ckpt_lock);
}

void mt_ckpt_wait_idle(void)
{
    pthread_mutex_lock(&ckpt_lock);
    while (ckpt_running)
        pthread_cond_wait(&ckpt_cond, &ckpt_lock);
    pthread_mutex_unlock(&ckpt_lock);
}

void mt_ckpt_stop(void)
{
    if (!ckpt_thread)
        return;
    pthread_mutex_lock(&ckpt_lock);
    ckpt_stop = true;
    pthread_cond_broadcast(&ckpt_cond);
    pthread_mutex_unlock(&ckpt_lock);
    mt_host_thread_join(ckpt_thread);
    ckpt_thread = NULL;
    /* The file must have no other connection when the sink takes it out of WAL mode. */
    sqlite3_close(ckpt_db);
    ckpt_db = NULL;
}
