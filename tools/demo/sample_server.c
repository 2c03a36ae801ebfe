/* The sample program `make demo` records: a toy request server with the heap habits real
 * services have, so every mtrace report has something to show.
 *
 * - a session cache whose evicted entries are freed, except on an error path that forgets
 *   the entry's payload (a real leak, found by `mtrace-report leaks`);
 * - a global configuration kept until exit (still reachable, not a leak);
 * - short-lived buffers per request (temporaries, `mtrace-report top --by temporary`);
 * - strings that grow by realloc;
 * - a burst of mixed sizes freed in a checkerboard pattern (fragmentation, `frag`);
 * - two worker threads that hand results to the main thread (cross-thread frees).
 * Deterministic: the same run every time. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUESTS 20000
#define CACHE_SLOTS 256
#define WORKER_ITEMS 5000
#define FRAG_BLOCKS 4000

struct session {
    unsigned id;
    char *payload;
    size_t payload_len;
};

static struct session *cache[CACHE_SLOTS];
/* Reachable at exit: not a leak. Not static: a static the program never reads is a dead
 * store the compiler may drop, and then the block would really be unreferenced. */
char *config;

static unsigned next_random(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static void evict(unsigned slot, int error_path)
{
    struct session *s = cache[slot];
    if (!s)
        return;
    if (!error_path) /* the bug: the error path forgets the payload */
        free(s->payload);
    free(s);
    cache[slot] = NULL;
}

static char *render_reply(unsigned id, unsigned *rng)
{
    /* Grows by realloc, the way string builders do. */
    size_t cap = 16, len = 0;
    char *out = malloc(cap);
    unsigned parts = 1 + next_random(rng) % 12;
    for (unsigned i = 0; i < parts; i++) {
        char piece[64];
        int n = snprintf(piece, sizeof piece, "<item id=%u part=%u/>", id, i);
        while (len + (size_t)n + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
        }
        memcpy(out + len, piece, (size_t)n + 1);
        len += (size_t)n;
    }
    return out;
}

static size_t handle_request(unsigned id, unsigned *rng)
{
    char *scratch = malloc(256 + next_random(rng) % 2048); /* temporary */
    memset(scratch, 0, 64);
    unsigned slot = id % CACHE_SLOTS;
    evict(slot, next_random(rng) % 97 == 0);
    struct session *s = malloc(sizeof *s);
    s->id = id;
    s->payload_len = 32 + next_random(rng) % 480;
    s->payload = malloc(s->payload_len);
    memset(s->payload, 'x', s->payload_len);
    cache[slot] = s;
    char *reply = render_reply(id, rng);
    size_t n = strlen(reply);
    free(reply);
    free(scratch);
    return n;
}

static void fragment_phase(unsigned *rng)
{
    static void *blocks[FRAG_BLOCKS];
    for (int i = 0; i < FRAG_BLOCKS; i++)
        blocks[i] = malloc(64 + next_random(rng) % 4000);
    for (int i = 0; i < FRAG_BLOCKS; i += 2) { /* checkerboard: holes everywhere */
        free(blocks[i]);
        blocks[i] = NULL;
    }
    for (int i = 0; i < FRAG_BLOCKS; i += 2)
        blocks[i] = malloc(8000 + next_random(rng) % 8000); /* too big for the holes */
    for (int i = 0; i < FRAG_BLOCKS; i++)
        free(blocks[i]);
}

struct result {
    struct result *next;
    unsigned value;
};

static struct result *results;
static pthread_mutex_t results_lock = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
    unsigned rng = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < WORKER_ITEMS; i++) {
        struct result *r = malloc(sizeof *r + next_random(&rng) % 200);
        r->value = next_random(&rng);
        pthread_mutex_lock(&results_lock);
        r->next = results;
        results = r;
        pthread_mutex_unlock(&results_lock);
    }
    return NULL;
}

int main(void)
{
    unsigned rng = 42;
    config = strdup("listen=0.0.0.0:8080 workers=2 cache=256");
    size_t bytes = 0;
    for (unsigned id = 0; id < REQUESTS; id++)
        bytes += handle_request(id, &rng);
    fragment_phase(&rng);

    pthread_t threads[2];
    for (uintptr_t t = 0; t < 2; t++)
        pthread_create(&threads[t], NULL, worker, (void *)(t + 7));
    for (int t = 0; t < 2; t++)
        pthread_join(threads[t], NULL);
    unsigned long sum = 0;
    while (results) { /* the main thread frees what the workers allocated */
        struct result *r = results;
        results = r->next;
        sum += r->value;
        free(r);
    }
    for (unsigned slot = 0; slot < CACHE_SLOTS; slot++)
        evict(slot, 0);
    printf("served %u requests, %zu bytes of replies, checksum %lu\n", REQUESTS, bytes, sum);
    return 0;
}
