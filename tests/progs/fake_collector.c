/* A stand-in for the collector, for testing libmtrace.so's producer side alone: started by
 * the traced program in plain LD_PRELOAD mode (MTRACE_COLLECTOR names this binary) as
 * `fake_collector --collector-fd N -o OUT`. It accepts every connection, answers HELLO
 * (accept, or reject when the exe contains $FAKE_REJECT), maps the process areas and rings
 * as trace/wire.h says, drains them, answers block queries, and when no connection is
 * left writes OUT as JSON: per process image, the records it saw by kind and op, whether
 * the sequence numbers were dense, how it ended, its stacks. Test-only: plain libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../../trace/wire.h"

#define MAX_CONNS 256
#define MAX_PROCS 1024
#define MAX_RINGS 256
#define SEQ_MAX (1u << 26)

struct ring {
    struct mt_wire_ring *r;
    size_t bytes;
};

struct proc {
    int pid, ppid;
    uint32_t flags;
    char exe[MT_WIRE_PATH_MAX];
    char argv0[256];
    struct mt_wire_proc *area;
    uint64_t area_size;
    struct ring rings[MAX_RINGS];
    int nrings;
    const char *end; /* "exec", "eof", "goodbye" */
    uint64_t ops[MT_OP_COUNT];
    uint64_t kinds[16];
    uint64_t records, bad, max_seq, dup_seq;
    uint8_t *seen; /* bit per seq */
    int exit_how, exit_code;
    uint64_t leaked, leaked_recs, scan_live, scan_leaked;
    uint64_t skips, queries, snapshot_classes;
    uint64_t realloc_moves;
    char marks[512];
    uint64_t malloc_frame0[8]; /* first frame of the first malloc events' stacks */
    int n_frame0;
    uint64_t dropped, unrecorded, stacks;
    uint64_t ring_waits, ring_grows;
    /* Events of the "tagged" size (FAKE_TAG_SIZE, default 1234), and frees of such blocks:
     * what a test program did itself, apart from libc's own calls. */
    uint64_t tagged_allocs, tagged_frees;
    uint64_t max_depth;
    int closed_rings;
    uint64_t *tagged; /* open addressing set of live tagged pointers */
    uint64_t *live_ptr, *live_size; /* every live block: pointer -> requested size */
    uint64_t leaked_sizes[64];
    int n_leaked_sizes;
    int rejected;
};

struct conn {
    int fd;
    int proc; /* index, -1 none */
    bool goodbye;
    bool eof;
};

static struct proc procs[MAX_PROCS];
static int nprocs;
static struct conn conns[MAX_CONNS];
static int nconns;

static void finish_area(struct proc *p);

#define TAG_SET 4194304u

static uint64_t tag_size = 1234;

static void track_tagged(struct proc *p, uint32_t op, const struct mt_wire_event_fields *ev)
{
    if (!p->tagged)
        p->tagged = calloc(TAG_SET, sizeof(uint64_t));
    if (op == MT_OP_FREE || op == MT_OP_REALLOC) {
        uint64_t old = op == MT_OP_FREE ? ev->ptr : ev->aux;
        for (uint64_t i = (old >> 4) % TAG_SET; p->tagged[i]; i = (i + 1) % TAG_SET)
            if (p->tagged[i] == old) {
                p->tagged[i] = 1; /* tombstone */
                p->tagged_frees++;
                break;
            }
    }
    if (op != MT_OP_FREE && op != MT_OP_REGION_POP && ev->size == tag_size) {
        p->tagged_allocs++;
        uint64_t i = (ev->ptr >> 4) % TAG_SET;
        while (p->tagged[i] > 1)
            i = (i + 1) % TAG_SET;
        p->tagged[i] = ev->ptr;
    }
}

static uint64_t *live_slot(struct proc *p, uint64_t ptr)
{
    if (!p->live_ptr) {
        p->live_ptr = calloc(TAG_SET, sizeof(uint64_t));
        p->live_size = calloc(TAG_SET, sizeof(uint64_t));
    }
    uint64_t i = (ptr >> 4) % TAG_SET;
    while (p->live_ptr[i] && p->live_ptr[i] != ptr)
        i = (i + 1) % TAG_SET;
    return &p->live_ptr[i];
}

static void track_live(struct proc *p, uint32_t op, const struct mt_wire_event_fields *ev)
{
    if (op == MT_OP_FREE || op == MT_OP_REGION_POP)
        return;
    uint64_t *slot = live_slot(p, ev->ptr);
    *slot = ev->ptr;
    p->live_size[slot - p->live_ptr] = ev->size;
}

/* FAKE_DIE_AFTER: vanish (like a crashed collector) after this many records in all. */
static uint64_t die_after, consumed_total;

static void consume(struct proc *p, const uint8_t *rec_bytes)
{
    const struct mt_wire_rec *rec = (const void *)rec_bytes;
    p->records++;
    if (die_after && ++consumed_total >= die_after)
        _exit(0);
    if (rec->kind == 0 || rec->kind > MT_REC_SKIP || rec->cells == 0) {
        p->bad++;
        return;
    }
    p->kinds[rec->kind]++;
    if (rec->kind != MT_REC_PAD) {
        if (rec->seq >= SEQ_MAX) {
            p->bad++;
        } else {
            if (p->seen[rec->seq / 8] & (1u << (rec->seq % 8)))
                p->dup_seq++;
            p->seen[rec->seq / 8] |= (uint8_t)(1u << (rec->seq % 8));
            if (rec->seq + 1 > p->max_seq)
                p->max_seq = rec->seq + 1;
        }
    }
    switch (rec->kind) {
    case MT_REC_EVENT: {
        if (rec->op == 0 || rec->op >= MT_OP_COUNT || (rec->sub == MT_EVENT_WIDE && rec->cells < 2)) {
            p->bad++;
            break;
        }
        struct mt_wire_event_fields fields;
        mt_wire_event_decode(rec, &fields);
        const struct mt_wire_event_fields *ev = &fields;
        p->ops[rec->op]++;
        track_tagged(p, rec->op, ev);
        track_live(p, rec->op, ev);
        if ((rec->op == MT_OP_REALLOC || rec->op == MT_OP_REALLOCARRAY) && ev->aux && ev->aux != ev->ptr)
            p->realloc_moves++;
        if (rec->op == MT_OP_MALLOC && ev->stack_id && p->n_frame0 < 8) {
            const struct mt_wire_stack *st =
                (const void *)((char *)p->area + p->area->stacks_at) + 0;
            st += ev->stack_id;
            const uint64_t *frames = (const void *)((char *)p->area + p->area->frames_at);
            p->malloc_frame0[p->n_frame0++] = frames[st->frames_at];
        }
        break;
    }
    case MT_REC_EXIT: {
        const struct mt_wire_exit *ex = (const void *)rec;
        p->exit_how = rec->sub;
        p->exit_code = ex->code;
        break;
    }
    case MT_REC_LEAKED: {
        const struct mt_wire_leaked *l = (const void *)rec;
        p->leaked += l->count;
        const uint64_t *ptrs = (const uint64_t *)(l + 1);
        for (uint32_t i = 0; i < l->count && p->n_leaked_sizes < 64; i++) {
            uint64_t *slot = live_slot(p, ptrs[i]);
            p->leaked_sizes[p->n_leaked_sizes++] = *slot ? p->live_size[slot - p->live_ptr] : UINT64_MAX;
        }
        p->leaked_recs++;
        break;
    }
    case MT_REC_SCAN_DONE: {
        const struct mt_wire_scan_done *d = (const void *)rec;
        p->scan_live = d->live_blocks;
        p->scan_leaked = d->leaked_blocks;
        break;
    }
    case MT_REC_SKIP:
        p->skips++;
        break;
    case MT_REC_SNAPSHOT: {
        const struct mt_wire_snapshot *s = (const void *)rec;
        p->snapshot_classes = s->class_count;
        break;
    }
    case MT_REC_MARK: {
        const struct mt_wire_text *t = (const void *)rec;
        size_t used = strlen(p->marks);
        if (used + t->len + 2 < sizeof p->marks) {
            memcpy(p->marks + used, (const char *)(t + 1), t->len);
            p->marks[used + t->len] = ';';
            p->marks[used + t->len + 1] = 0;
        }
        break;
    }
    }
}

static void drain_ring(struct proc *p, struct mt_wire_ring *r)
{
    uint8_t buf[256 * MT_WIRE_CELL];
    uint64_t head = __atomic_load_n((uint64_t *)&r->head, __ATOMIC_ACQUIRE);
    uint64_t tail = r->tail;
    uint8_t *cells = (uint8_t *)r + MT_WIRE_RING_HEADER;
    while (tail < head) {
        const struct mt_wire_rec *first = (const void *)(cells + (tail % r->cells) * MT_WIRE_CELL);
        uint32_t n = first->cells;
        if (n == 0 || tail + n > head || n > 256) {
            p->bad++;
            tail = head;
            break;
        }
        for (uint32_t i = 0; i < n; i++)
            memcpy(buf + i * MT_WIRE_CELL, cells + ((tail + i) % r->cells) * MT_WIRE_CELL, MT_WIRE_CELL);
        consume(p, buf);
        tail += n;
    }
    __atomic_store_n((uint64_t *)&r->tail, tail, __ATOMIC_RELEASE);
    if (__atomic_load_n((uint32_t *)&r->waiting, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, (uint32_t *)&r->tail, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
}

static void drain(struct proc *p)
{
    for (int i = 0; i < p->nrings; i++)
        drain_ring(p, p->rings[i].r);
}

static void finish_area(struct proc *p)
{
    if (!p->area)
        return;
    drain(p);
    p->dropped = p->area->dropped;
    p->ring_waits = p->area->ring_waits;
    p->ring_grows = p->area->ring_grows;
    p->unrecorded = p->area->unrecorded;
    p->stacks = p->area->next_stack - 1;
    const struct mt_wire_stack *stacks = (const void *)((char *)p->area + p->area->stacks_at);
    for (uint64_t id = 1; id <= p->stacks && id < MT_WIRE_STACKS_MAX; id++)
        if (stacks[id].depth > p->max_depth)
            p->max_depth = stacks[id].depth;
    p->closed_rings = 0;
    for (int i = 0; i < p->nrings; i++)
        p->closed_rings += p->rings[i].r->closed != 0;
}

static int recv_fd(int fd, void *buf, size_t cap, int *passed)
{
    struct iovec iov = {buf, cap};
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    *passed = -1;
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return (int)n;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_type == SCM_RIGHTS)
        memcpy(passed, CMSG_DATA(cm), sizeof(int));
    return (int)n;
}

static void on_message(struct conn *c)
{
    static struct mt_msg_hello hello;
    int passed;
    int n = recv_fd(c->fd, &hello, sizeof hello, &passed);
    if (n <= 0 && c->goodbye) {
        /* The process shut its side down and waits for us to close: at the very end. */
        c->eof = true;
        return;
    }
    if (n <= 0) {
        if (c->proc >= 0) {
            finish_area(&procs[c->proc]);
            if (!procs[c->proc].end)
                procs[c->proc].end = "eof";
        }
        close(c->fd);
        c->fd = -1;
        return;
    }
    struct mt_msg_head *head = &hello.head;
    if (head->type == MT_MSG_HELLO) {
        if (c->proc >= 0) {
            finish_area(&procs[c->proc]);
            procs[c->proc].end = "exec";
        }
        struct proc *p = &procs[nprocs];
        c->proc = nprocs++;
        p->pid = hello.pid;
        p->ppid = hello.ppid;
        p->flags = hello.flags;
        snprintf(p->exe, sizeof p->exe, "%s", hello.exe);
        snprintf(p->argv0, sizeof p->argv0, "%.200s", hello.argv);
        p->seen = calloc(SEQ_MAX / 8, 1);
        p->area_size = hello.proc_area_size;
        p->area = mmap(NULL, p->area_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, passed, 0);
        close(passed);
        const char *reject = getenv("FAKE_REJECT");
        p->rejected = reject && *reject && strstr(p->exe, reject);
        struct mt_msg_hello_reply reply = {{MT_WIRE_MAGIC, MT_WIRE_VERSION, MT_MSG_HELLO_REPLY}, 0, 0, 0};
        reply.verdict = p->rejected ? MT_HELLO_REJECT : MT_HELLO_ACCEPT;
        reply.wait_at_exit = (hello.flags & MT_HELLO_SPAWNED_COLLECTOR) != 0;
        send(c->fd, &reply, sizeof reply, MSG_NOSIGNAL);
    } else if (head->type == MT_MSG_RING && c->proc >= 0) {
        struct mt_msg_ring *m = (void *)&hello;
        struct proc *p = &procs[c->proc];
        void *r = mmap(NULL, m->ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, passed, 0);
        close(passed);
        if (r != MAP_FAILED && p->nrings < MAX_RINGS) {
            p->rings[p->nrings].r = r;
            p->rings[p->nrings++].bytes = m->ring_bytes;
        }
    } else if (head->type == MT_MSG_GOODBYE) {
        c->goodbye = true;
        if (c->proc >= 0) {
            finish_area(&procs[c->proc]);
            procs[c->proc].end = "goodbye";
        }
    } else if (head->type == MT_MSG_BLOCK_QUERY && c->proc >= 0) {
        struct mt_msg_block_query *q = (void *)&hello;
        struct proc *p = &procs[c->proc];
        drain(p);
        p->queries++;
        static struct mt_msg_block_info info;
        memset(&info, 0, sizeof info);
        info.head = (struct mt_msg_head){MT_WIRE_MAGIC, MT_WIRE_VERSION, MT_MSG_BLOCK_INFO};
        info.found = 1;
        info.len = (uint32_t)snprintf(info.text, sizeof info.text,
                                      "mtrace:   fake collector: block %#llx, records to seq %llu\n",
                                      (unsigned long long)q->ptr, (unsigned long long)q->upto_seq);
        send(c->fd, &info, sizeof info, MSG_NOSIGNAL);
    } else if (passed >= 0) {
        close(passed);
    }
}

static void write_output(const char *out)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "[\n");
    for (int i = 0; i < nprocs; i++) {
        struct proc *p = &procs[i];
        uint64_t missing = 0;
        for (uint64_t s = 0; s < p->max_seq; s++)
            if (!(p->seen[s / 8] & (1u << (s % 8))))
                missing++;
        fprintf(f, "{\"pid\": %d, \"ppid\": %d, \"flags\": %u, \"exe\": \"%s\", \"argv0\": \"%s\", \"end\": \"%s\", ",
                p->pid, p->ppid, p->flags, p->exe, p->argv0, p->end ? p->end : "open");
        fprintf(f, "\"rejected\": %d, \"records\": %llu, \"bad\": %llu, \"seqs\": %llu, \"missing\": %llu, "
                   "\"dup\": %llu, ",
                p->rejected, (unsigned long long)p->records, (unsigned long long)p->bad,
                (unsigned long long)p->max_seq, (unsigned long long)missing, (unsigned long long)p->dup_seq);
        fprintf(f, "\"ops\": {");
        for (int o = 1; o < MT_OP_COUNT; o++)
            fprintf(f, "%s\"%d\": %llu", o > 1 ? ", " : "", o, (unsigned long long)p->ops[o]);
        fprintf(f, "}, \"kinds\": {");
        for (int k = 1; k <= MT_REC_SKIP; k++)
            fprintf(f, "%s\"%d\": %llu", k > 1 ? ", " : "", k, (unsigned long long)p->kinds[k]);
        fprintf(f, "}, \"exit_how\": %d, \"exit_code\": %d, \"leaked\": %llu, \"scan_live\": %llu, "
                   "\"scan_leaked\": %llu, \"skips\": %llu, \"queries\": %llu, \"rings\": %d, "
                   "\"dropped\": %llu, \"unrecorded\": %llu, \"stacks\": %llu, \"snapshot_classes\": %llu, "
                   "\"realloc_moves\": %llu, \"tagged_allocs\": %llu, \"tagged_frees\": %llu, "
                   "\"ring_waits\": %llu, \"ring_grows\": %llu, "
                   "\"marks\": \"%s\", \"frame0\": [",
                p->exit_how, p->exit_code, (unsigned long long)p->leaked, (unsigned long long)p->scan_live,
                (unsigned long long)p->scan_leaked, (unsigned long long)p->skips, (unsigned long long)p->queries,
                p->nrings, (unsigned long long)p->dropped, (unsigned long long)p->unrecorded,
                (unsigned long long)p->stacks, (unsigned long long)p->snapshot_classes,
                (unsigned long long)p->realloc_moves, (unsigned long long)p->tagged_allocs,
                (unsigned long long)p->tagged_frees, (unsigned long long)p->ring_waits,
                (unsigned long long)p->ring_grows, p->marks);
        for (int j = 0; j < p->n_frame0; j++)
            fprintf(f, "%s%llu", j ? ", " : "", (unsigned long long)p->malloc_frame0[j]);
        fprintf(f, "], \"max_depth\": %llu, \"closed_rings\": %d, \"leaked_sizes\": [",
                (unsigned long long)p->max_depth, p->closed_rings);
        for (int j = 0; j < p->n_leaked_sizes; j++)
            fprintf(f, "%s%lld", j ? ", " : "", (long long)p->leaked_sizes[j]);
        fprintf(f, "]}%s\n", i + 1 < nprocs ? "," : "");
    }
    fprintf(f, "]\n");
    fclose(f);
    rename(tmp, out);
}

int main(int argc, char **argv)
{
    int listener = -1;
    const char *out = NULL;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--collector-fd") == 0)
            listener = atoi(argv[++i]);
        else if (strcmp(argv[i], "-o") == 0)
            out = argv[++i];
    }
    if (listener < 0 || !out)
        return 2;
    /* Slow consumer for drop / wait tests: microseconds to sleep per drain round. */
    const char *slow = getenv("FAKE_SLOW_US");
    long slow_us = slow ? atol(slow) : 0;
    /* A stalled consumer: rings are read only when their process says goodbye (a thread
     * that waited for space would hang the test). */
    bool no_drain = getenv("FAKE_NO_DRAIN") != NULL;
    bool seen_any = false;
    if (getenv("FAKE_DIE_AFTER"))
        die_after = strtoull(getenv("FAKE_DIE_AFTER"), NULL, 0);
    if (getenv("FAKE_TAG_SIZE"))
        tag_size = strtoull(getenv("FAKE_TAG_SIZE"), NULL, 0);
    for (;;) {
        struct pollfd pfd[MAX_CONNS + 1];
        pfd[0] = (struct pollfd){listener, POLLIN, 0};
        int open_conns = 0;
        for (int i = 0; i < nconns; i++) {
            pfd[i + 1] = (struct pollfd){conns[i].eof ? -1 : conns[i].fd, POLLIN, 0};
            if (conns[i].fd >= 0 && !conns[i].goodbye)
                open_conns++;
        }
        int rc = poll(pfd, (nfds_t)nconns + 1, 2);
        if (rc < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN) {
            int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && nconns < MAX_CONNS) {
                conns[nconns++] = (struct conn){fd, -1, false, false};
                seen_any = true;
            }
            continue;
        }
        for (int i = 0; i < nconns; i++)
            if (conns[i].fd >= 0 && (pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                on_message(&conns[i]);
        for (int i = 0; !no_drain && i < nprocs; i++)
            drain(&procs[i]);
        if (slow_us)
            usleep((useconds_t)slow_us);
        if (seen_any && open_conns == 0 && rc == 0)
            break;
    }
    for (int i = 0; i < nprocs; i++)
        finish_area(&procs[i]);
    write_output(out);
    /* Release the processes waiting at exit only once the output is final. */
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    return 0;
}
