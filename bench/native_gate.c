/* native_gate: the gate's data path in C, for bench/throughput.py's "native" mode.
 *
 * Why it exists: issue 6 asks whether the gate can reach 0.7x a lean Python
 * passthrough. Compiling the Python loop (Cython) changed nothing
 * (bench/RESULTS.md, 14:36): the time is in what the loop calls. This program
 * measures what a native rewrite of the data path could reach on the same
 * machine and broker: no Python objects per event, fields read straight from the
 * bytes, a C table for the allow-list, librdkafka called directly. It is a
 * measuring instrument, not a second gate: no control plane, no statistics, no
 * surge guard, no rate caps, no monitor-mode apps (the harness refuses rules
 * that need them), and it is only checked against the Python core on what
 * `etl-gate gen` writes (tests/unit/test_native_gate.py).
 *
 * What it does per event, as SPEC sections 3 and 4 and the Python worker do:
 *   - validates the whole value as JSON (RFC 8259, UTF-8) and reads the
 *     top-level app, event and sample-key fields (the last of duplicate keys);
 *   - malformed -> the DLQ with the worker's headers (error, source-topic,
 *     source-partition, source-offset, rules-version);
 *   - (app, event) looked up in an open-addressing table; unregistered and
 *     offline events dropped; sampling by MurmurHash3-32 of the key bytes;
 *   - passed -> the priority topic, partition = input partition mod the
 *     topic's partitions, the input's key and timestamp, headers priority,
 *     rules-version and, when sampled, sample-rate;
 *   - at-least-once as the worker: every commit interval, when the input runs
 *     dry and before partitions are revoked, the producer is flushed, then the
 *     consumer's positions are committed.
 * Known differences from the Python core, none reached by generated data: a
 * numeric app id or a non-string sample key whose orjson text differs from its
 * input text (-0, 1E2, 1.50, integers beyond 64 bits, objects with spaces).
 * The JSON reader is etl_gate/fastpath/gate_json.h, the gate's own fast path's.
 *
 * Usage:
 *   native_gate version                                 # the librdkafka it runs with
 *   native_gate decide RULES.tsv SEED KEYS < lines     # "outcome priority reason" per line
 *   native_gate run RULES.tsv SEED KEYS BOOTSTRAP GROUP INPUT P0,P1,P2,DLQ VERSION COMMIT_MS \
 *       [-T on|off] [-C key=value]... [-P key=value]...
 * RULES.tsv: app \t event \t priority (0..2, -1 offline) \t threshold (-1: not
 * sampled) \t sample key ("" for the default keys) \t sample-rate header text.
 * KEYS: the default sample keys, comma-separated (top-level names).
 * -T off: no tag headers on routed outputs (SPEC 4, tag.headers = false).
 * `run` stops on SIGTERM/SIGINT: flush, commit, close, then one JSON line of
 * counts on stdout.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <librdkafka/rdkafka.h>

#include "gate_json.h"

/* -- rules ------------------------------------------------------------------ */

typedef struct {
    char *key;          /* app \0 event */
    size_t keylen;
    int priority;       /* 0..2, -1 offline */
    int64_t threshold;  /* -1: not sampled */
    int key_field;      /* index into the parser's fields: the rule's own sample key, or -1 */
    char *rate_text;
} Rule;

typedef struct {
    Rule *rules;
    size_t n, cap;
    Rule **slots;
    size_t mask;
} Table;

static uint64_t fnv1a(const u8 *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
    return h;
}

static const Rule *lookup(const Table *t, const u8 *key, size_t n) {
    size_t i = (size_t)fnv1a(key, n) & t->mask;
    for (;;) {
        const Rule *r = t->slots[i];
        if (!r) return NULL;
        if (r->keylen == n && memcmp(r->key, key, n) == 0) return r;
        i = (i + 1) & t->mask;
    }
}

typedef struct {
    Table table;
    uint32_t seed;
    Parser proto;   /* field names: 0 app, 1 event, then sample keys */
    int ndefault;   /* default sample keys: fields 2 .. 2+ndefault-1 */
} Gate;

static int field_index(Gate *g, const char *name) {
    for (int i = 0; i < g->proto.nfields; i++)
        if (strcmp(g->proto.names[i], name) == 0) return i;
    if (g->proto.nfields == MAX_FIELDS) {
        fprintf(stderr, "native_gate: more than %d distinct field names\n", MAX_FIELDS);
        exit(2);
    }
    int i = g->proto.nfields++;
    g->proto.names[i] = strdup(name);
    g->proto.lens[i] = strlen(name);
    return i;
}

static void load_rules(Gate *g, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "native_gate: %s: %s\n", path, strerror(errno)); exit(2); }
    Table *t = &g->table;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n') line[--len] = 0;
        char *cols[6];
        int nc = 0;
        char *p = line;
        for (; nc < 6; nc++) {
            cols[nc] = p;
            char *tab = strchr(p, '\t');
            if (!tab) { nc++; break; }
            *tab = 0;
            p = tab + 1;
        }
        if (nc != 6) { fprintf(stderr, "native_gate: %s: a line without 6 columns\n", path); exit(2); }
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 1024;
            t->rules = realloc(t->rules, t->cap * sizeof(Rule));
        }
        Rule *r = &t->rules[t->n++];
        size_t la = strlen(cols[0]), le = strlen(cols[1]);
        r->keylen = la + 1 + le;
        r->key = malloc(r->keylen);
        memcpy(r->key, cols[0], la);
        r->key[la] = 0;
        memcpy(r->key + la + 1, cols[1], le);
        r->priority = atoi(cols[2]);
        r->threshold = strtoll(cols[3], NULL, 10);
        r->key_field = cols[4][0] ? field_index(g, cols[4]) : -1;
        r->rate_text = strdup(cols[5]);
    }
    free(line);
    fclose(f);
    size_t size = 16;
    while (size < t->n * 2) size *= 2;
    t->slots = calloc(size, sizeof(Rule *));
    t->mask = size - 1;
    for (size_t k = 0; k < t->n; k++) {
        Rule *r = &t->rules[k];
        size_t i = (size_t)fnv1a((u8 *)r->key, r->keylen) & t->mask;
        while (t->slots[i]) i = (i + 1) & t->mask;
        t->slots[i] = r;
    }
}

static void init_gate(Gate *g, const char *rules, const char *seed, const char *keys) {
    memset(g, 0, sizeof *g);
    g->seed = (uint32_t)strtoul(seed, NULL, 10);
    field_index(g, "app_id");
    field_index(g, "event");
    char *ks = strdup(keys);
    for (char *k = strtok(ks, ","); k; k = strtok(NULL, ",")) { field_index(g, k); g->ndefault++; }
    free(ks);
    load_rules(g, rules);
}

enum { PASSED, UNREGISTERED, BLOCKED, SAMPLED_OUT, MALFORMED, N_OUTCOMES };
static const char *OUTCOME[] = {"passed", "unregistered", "blocked", "sampled_out", "malformed"};

typedef struct {
    int outcome;
    int priority;       /* routed: 0..2; -1 otherwise */
    const Rule *rule;
    const char *why;    /* malformed: the DLQ's error header */
} Verdict;

static Verdict decide(Gate *g, const u8 *raw, size_t n, u8 *buf) {
    Verdict v = {MALFORMED, -1, NULL, "invalid_json"};
    Parser ps;
    int rc = read_event(&g->proto, raw, n, &ps);
    if (rc == READ_INVALID) return v;
    if (rc == READ_NOT_OBJECT) { v.why = "not_object"; return v; }
    /* The allow-list key: app \0 event, decoded. */
    const Span *app = &ps.fields[0], *ev = &ps.fields[1];
    size_t o;
    if (app->type == T_STR) o = app->esc ? unescape(app->s, app->n, buf) : (memcpy(buf, app->s, app->n), app->n);
    else if (app->type == T_NUM) { memcpy(buf, app->s, app->n); o = app->n; }
    else { v.why = app->type == T_NONE ? "missing_app" : "bad_app"; return v; }
    if (ev->type != T_STR) { v.why = ev->type == T_NONE ? "missing_event" : "bad_event"; return v; }
    buf[o++] = 0;
    o += ev->esc ? unescape(ev->s, ev->n, buf + o) : (memcpy(buf + o, ev->s, ev->n), ev->n);
    const Rule *r = lookup(&g->table, buf, o);
    v.why = NULL;
    if (!r) { v.outcome = UNREGISTERED; return v; }
    v.rule = r;
    if (r->priority < 0) { v.outcome = BLOCKED; return v; }
    if (r->threshold >= 0) {
        const Span *key = NULL;
        if (r->key_field >= 0) {
            if (ps.fields[r->key_field].type != T_NONE && ps.fields[r->key_field].type != T_NULL)
                key = &ps.fields[r->key_field];
        } else {
            for (int i = 2; i < 2 + g->ndefault; i++)
                if (ps.fields[i].type != T_NONE && ps.fields[i].type != T_NULL) { key = &ps.fields[i]; break; }
        }
        const u8 *kb = raw;
        size_t kn = n;
        if (key && key->type == T_STR) {
            if (key->esc) { kn = unescape(key->s, key->n, buf); kb = buf; }
            else { kb = key->s; kn = key->n; }
        } else if (key) { kn = compact(key->s, key->n, buf); kb = buf; }
        if ((int64_t)murmur3_32(kb, kn, g->seed) >= r->threshold) { v.outcome = SAMPLED_OUT; return v; }
    }
    v.outcome = PASSED;
    v.priority = r->priority;
    return v;
}

/* -- decide: lines in, verdicts out (the check against the Python core) ------- */

static int cmd_decide(Gate *g) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    u8 *buf = NULL;
    size_t bufcap = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len && line[len - 1] == '\n') len--;
        if ((size_t)len * 2 + 16 > bufcap) { bufcap = (size_t)len * 2 + 16; buf = realloc(buf, bufcap); }
        Verdict v = decide(g, (u8 *)line, (size_t)len, buf);
        printf("%s %d %s\n", OUTCOME[v.outcome], v.priority, v.why ? v.why : "-");
    }
    free(line);
    free(buf);
    return 0;
}

/* -- run: the Kafka data path -------------------------------------------------- */

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }
static long long delivery_errors = 0;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk; (void)opaque;
    if (m->err) {
        if (delivery_errors++ < 5) fprintf(stderr, "native_gate: delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
    /* The input message whose payload this output shared (no copy). */
    rd_kafka_message_destroy((rd_kafka_message_t *)m->_private);
}

/* Before giving partitions up: every output acknowledged, then the inputs
 * committed, so that the next owner starts after them (no duplicates at the
 * start, when the second process joins the group). */
static rd_kafka_t *producer_handle;

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        return;
    }
    rd_kafka_flush(producer_handle, 60000);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fprintf(stderr, "native_gate: commit on revoke: %s\n", rd_kafka_err2str(cerr));
    rd_kafka_assign(rk, NULL);
}

static void set(rd_kafka_conf_t *conf, const char *kv) {
    char key[256], err[512];
    const char *eq = strchr(kv, '=');
    if (!eq || (size_t)(eq - kv) >= sizeof key) { fprintf(stderr, "native_gate: bad setting %s\n", kv); exit(2); }
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = 0;
    if (rd_kafka_conf_set(conf, key, eq + 1, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "native_gate: %s\n", err);
        exit(2);
    }
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int partitions_of(rd_kafka_t *rk, rd_kafka_topic_t *rkt) {
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        fprintf(stderr, "native_gate: no metadata for %s\n", rd_kafka_topic_name(rkt));
        exit(1);
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

static void produce(rd_kafka_t *prod, rd_kafka_topic_t *rkt, int32_t part, rd_kafka_message_t *m,
                    rd_kafka_headers_t *h) {
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            prod, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(part),
            RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(m, NULL)),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (!err) return;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "native_gate: produce: %s\n", rd_kafka_err2str(err));
            exit(1);
        }
        rd_kafka_poll(prod, 50); /* the queue is full: let deliveries drain it */
    }
}

static int cmd_run(Gate *g, char **argv, int argc) {
    if (argc < 6) { fprintf(stderr, "native_gate run: too few arguments\n"); return 2; }
    const char *bootstrap = argv[0], *group = argv[1], *input = argv[2], *version = argv[4];
    long long commit_ms = atoll(argv[5]);
    char *names = strdup(argv[3]);
    char *outs[4];
    int nout = 0;
    for (char *s = strtok(names, ","); s && nout < 4; s = strtok(NULL, ",")) outs[nout++] = s;
    if (nout != 4) { fprintf(stderr, "native_gate run: need P0,P1,P2,DLQ topics\n"); return 2; }
    char err[512];
    int tag_headers = 1; /* SPEC 4: tag.headers; -T off: routed outputs carry none */
    rd_kafka_conf_t *cc = rd_kafka_conf_new(), *pc = rd_kafka_conf_new();
    set(cc, "enable.auto.commit=false");
    set(cc, "auto.offset.reset=earliest");
    for (int i = 6; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-T") == 0) tag_headers = strcmp(argv[i + 1], "off") != 0;
        else if (strcmp(argv[i], "-C") == 0) set(cc, argv[i + 1]);
        else if (strcmp(argv[i], "-P") == 0) set(pc, argv[i + 1]);
        else { fprintf(stderr, "native_gate run: unknown option %s\n", argv[i]); return 2; }
    }
    rd_kafka_conf_set(cc, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(cc, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(pc, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    rd_kafka_conf_set_rebalance_cb(cc, on_rebalance);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
    if (!prod) { fprintf(stderr, "native_gate: %s\n", err); return 1; }
    producer_handle = prod;
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof err);
    if (!cons) { fprintf(stderr, "native_gate: %s\n", err); return 1; }
    rd_kafka_poll_set_consumer(cons);
    rd_kafka_topic_t *rkt[4];
    int nparts[4];
    for (int i = 0; i < 4; i++) {
        rkt[i] = rd_kafka_topic_new(prod, outs[i], NULL);
        nparts[i] = partitions_of(prod, rkt[i]);
    }
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, input, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(cons, subs)) { fprintf(stderr, "native_gate: subscribe failed\n"); return 1; }
    rd_kafka_topic_partition_list_destroy(subs);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    static const char *PRIO[] = {"P0", "P1", "P2"};
    long long counts[N_OUTCOMES] = {0}, routed[4] = {0}, consumed = 0;
    size_t vlen = strlen(version);
    u8 *buf = NULL;
    size_t bufcap = 0;
    long long next_commit = now_ms() + commit_ms;
    int dirty = 0; /* consumed since the last commit */
    while (!stopping) {
        /* 5 ms, the gate's batch_timeout_ms: how long a dry input goes unnoticed. */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 5);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    fprintf(stderr, "native_gate: consumer: %s\n", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                consumed++;
                dirty = 1;
                if (m->len * 2 + 16 > bufcap) { bufcap = m->len * 2 + 16; buf = realloc(buf, bufcap); }
                const u8 *raw = m->payload ? (const u8 *)m->payload : (const u8 *)"";
                Verdict v = decide(g, raw, m->len, buf);
                counts[v.outcome]++;
                if (v.outcome == PASSED) {
                    rd_kafka_headers_t *h = NULL;
                    if (tag_headers) {
                        h = rd_kafka_headers_new(3);
                        rd_kafka_header_add(h, "priority", 8, PRIO[v.priority], 2);
                        rd_kafka_header_add(h, "rules-version", 13, version, (ssize_t)vlen);
                        if (v.rule->threshold >= 0)
                            rd_kafka_header_add(h, "sample-rate", 11, v.rule->rate_text, -1);
                    }
                    produce(prod, rkt[v.priority], m->partition % nparts[v.priority], m, h);
                    routed[v.priority]++;
                } else if (v.outcome == MALFORMED) {
                    char part[16], off[24];
                    snprintf(part, sizeof part, "%d", (int)m->partition);
                    snprintf(off, sizeof off, "%lld", (long long)m->offset);
                    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
                    rd_kafka_header_add(h, "error", 5, v.why, -1);
                    rd_kafka_header_add(h, "source-topic", 12, input, -1);
                    rd_kafka_header_add(h, "source-partition", 16, part, -1);
                    rd_kafka_header_add(h, "source-offset", 13, off, -1);
                    rd_kafka_header_add(h, "rules-version", 13, version, (ssize_t)vlen);
                    produce(prod, rkt[3], m->partition % nparts[3], m, h);
                    routed[3]++;
                } else {
                    rd_kafka_message_destroy(m);
                }
            }
        }
        rd_kafka_poll(prod, 0);
        /* Every commit interval, and when the input runs dry (as the passthrough
         * and the gate do: else the last events wait up to an interval). */
        if (dirty && (!m || now_ms() >= next_commit)) {
            /* At least once: every output acknowledged before its input is committed. */
            rd_kafka_flush(prod, 60000);
            rd_kafka_commit(cons, NULL, 1);
            next_commit = now_ms() + commit_ms;
            dirty = 0;
        }
    }
    rd_kafka_flush(prod, 60000);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(cons, NULL, 0);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fprintf(stderr, "native_gate: final commit: %s\n", rd_kafka_err2str(cerr));
    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
    for (int i = 0; i < 4; i++) rd_kafka_topic_destroy(rkt[i]);
    rd_kafka_destroy(prod);
    printf("{\"consumed\": %lld, \"p0\": %lld, \"p1\": %lld, \"p2\": %lld, \"dlq\": %lld, "
           "\"unregistered\": %lld, \"blocked\": %lld, \"sampled_out\": %lld, \"delivery_errors\": %lld}\n",
           consumed, routed[0], routed[1], routed[2], routed[3], counts[UNREGISTERED],
           counts[BLOCKED], counts[SAMPLED_OUT], delivery_errors);
    free(buf);
    free(names);
    return delivery_errors ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        printf("%s\n", rd_kafka_version_str()); /* the library loaded, not the headers' */
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: native_gate decide|run RULES.tsv SEED KEYS [run arguments]\n");
        return 2;
    }
    Gate g;
    init_gate(&g, argv[2], argv[3], argv[4]);
    if (strcmp(argv[1], "decide") == 0) return cmd_decide(&g);
    if (strcmp(argv[1], "run") == 0) return cmd_run(&g, argv + 5, argc - 5);
    fprintf(stderr, "native_gate: unknown command %s\n", argv[1]);
    return 2;
}
