/* _fastpath: the worker's per-event loop in C (kafka.engine = "native").
 *
 * Why: issue 6. A Python loop pays an interpreter step, a decoded object and
 * a produce() call with a header list per event; together they held the gate
 * at half a lean Python passthrough (bench/RESULTS.md). Here the common
 * events are decided from the bytes and produced with librdkafka directly,
 * while the worker's Python keeps everything else: the consumer (rebalances,
 * commits, seeks stay confluent-kafka's), checkpoints, rules, telemetry.
 *
 * What is decided here and what is not. The table is built from the Python
 * Decider in force (fastpath/table.py), so both decide from one compiled
 * version. The loop stops at the first event it is not sure to decide as the
 * Python core would, and the worker's Python decides and routes that one event
 * before calling back in: order per partition is kept. Those are: consumer
 * errors and tombstones; rules with a rate cap or a dotted sample key;
 * unregistered events of monitor-mode apps; events under a surge guard; an
 * app id that is a number other than a plain integer; a sample key that is an
 * object, an array or a non-integer number. Everything else (registered, offline, sampled,
 * unregistered, quarantined, malformed) is decided, counted per (app, event)
 * and produced here, with the headers the Python worker writes.
 *
 * Objects:
 *   Producer  an idempotent librdkafka producer, with the methods of
 *             confluent_kafka.Producer the worker uses (produce, poll, flush,
 *             len) plus route() (the loop), counts() and partition_counts().
 *             Delivery failures (only those are reported) call on_error.
 *   Table     one rules version's lookup table and its statistics.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <librdkafka/rdkafka.h>

#include "gate_json.h"

/* Outcomes and malformed reasons, in etl_gate/core/decide.py's order. */
enum { PASSED, SAMPLED_OUT, UNREGISTERED, BLOCKED, MALFORMED, THROTTLED, N_OUT };
static const char *REASONS[] = {"invalid_json", "not_object", "missing_app", "bad_app",
                                "missing_event", "bad_event"};
enum { R_INVALID_JSON, R_NOT_OBJECT, R_MISSING_APP, R_BAD_APP, R_MISSING_EVENT, R_BAD_EVENT,
       N_REASONS };
/* Rule kinds (fastpath/table.py classifies the special ones). */
enum { K_PLAIN, K_SAMPLED, K_BLOCKED, K_SLOW };
/* Outputs: the priority topics, the DLQ, the quarantine topic. */
enum { O_DLQ = 3, O_QUARANTINE = 4, N_OUTPUTS = 5 };
#define SLOW (-1)

static PyObject *KafkaErrorType, *KafkaExceptionType; /* confluent_kafka's */

/* -- the table ------------------------------------------------------------- */

typedef struct {
    int n;
    const char *name[4];
    const char *val[4];
    Py_ssize_t vlen[4];
} HSet; /* a verdict's tag headers; the strings belong to the Python list kept alive */

/* One rule: 40 bytes, 20 MB for 500k (issue 3 bounds what a push adds to a
 * worker); the names are read from the strings themselves, not copied. */
typedef struct {
    PyObject *app, *event; /* borrowed: the table keeps the decider's apps dict */
    uint32_t hash;
    int32_t stat;       /* its row in this interval's statistics, -1: none yet */
    uint32_t threshold; /* K_SAMPLED: keep iff hash < threshold */
    uint16_t hset;      /* its tag headers, NO_HSET: tagging off */
    int8_t kind, prio, key_field, guarded;
} Entry;
#define NO_HSET 0xFFFF

typedef struct {
    Entry *e;
    int64_t n[N_OUT], b[N_OUT];
} StatRow;

typedef struct {
    u8 *key; /* app \0 event */
    size_t alen, len;
    uint32_t hash;
    int64_t n, b;
} Unreg;

typedef struct {
    PyObject_HEAD
    PyObject *keep;  /* the apps dict and the header lists the entries point into */
    Entry *entries;
    size_t n;
    uint32_t *slots; /* entry index + 1; 0 empty */
    size_t mask;
    uint32_t *mon;   /* monitor-mode apps: entry-less app keys, as indexes into mon_keys */
    PyObject **mon_apps;
    size_t nmon, mon_mask;
    HSet *hsets;
    size_t nh;
    uint32_t seed;
    int64_t quarantine;       /* threshold; 0: off */
    Parser proto;             /* fields: 0 app, 1 event, then sample keys */
    int ndefault;             /* default sample keys: fields 2 .. 2+ndefault-1 */
    int stats;                /* count per (app, event) */
    char version[24];
    Py_ssize_t vlen;
    /* statistics since the last drain */
    StatRow *rows;
    size_t nrows, caprows;
    Unreg *unreg;             /* open addressing */
    size_t nunreg, unreg_mask;
    int64_t mal[N_REASONS][2];
    int32_t *guarded;         /* entries under a surge guard */
    size_t nguarded;
} Table;

static uint32_t fnv_step(uint32_t h, const u8 *s, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 16777619u; }
    return h;
}
static uint32_t key_hash(const u8 *a, size_t alen, const u8 *e, size_t elen) {
    uint32_t h = fnv_step(2166136261u, a, alen);
    h = (h ^ 0xFFu) * 16777619u; /* between the two: ("ab", "c") is not ("a", "bc") */
    return fnv_step(h, e, elen);
}

static Entry *lookup(Table *t, const u8 *a, size_t alen, const u8 *e, size_t elen) {
    uint32_t h = key_hash(a, alen, e, elen);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint32_t s = t->slots[i];
        if (!s) return NULL;
        Entry *x = &t->entries[s - 1];
        if (x->hash != h) continue;
        Py_ssize_t xa, xe;
        const char *as = PyUnicode_AsUTF8AndSize(x->app, &xa), *es = PyUnicode_AsUTF8AndSize(x->event, &xe);
        if ((size_t)xa == alen && (size_t)xe == elen && memcmp(as, a, alen) == 0 && memcmp(es, e, elen) == 0)
            return x;
    }
}

static int is_monitor(Table *t, const u8 *a, size_t alen) {
    if (!t->nmon) return 0;
    uint32_t h = fnv_step(2166136261u, a, alen);
    for (size_t i = h & t->mon_mask;; i = (i + 1) & t->mon_mask) {
        uint32_t s = t->mon[i];
        if (!s) return 0;
        Py_ssize_t n;
        const char *x = PyUnicode_AsUTF8AndSize(t->mon_apps[s - 1], &n);
        if ((size_t)n == alen && memcmp(x, a, alen) == 0) return 1;
    }
}

static int field_index(Table *t, const char *name) {
    for (int i = 0; i < t->proto.nfields; i++)
        if (strcmp(t->proto.names[i], name) == 0) return i;
    if (t->proto.nfields == MAX_FIELDS) return -1;
    int i = t->proto.nfields++;
    t->proto.names[i] = name; /* a UTF-8 buffer of a str the table keeps */
    t->proto.lens[i] = strlen(name);
    return i;
}

/* A plain JSON integer whose Python text is its own (not -0, at most 18
 * digits: orjson reads it as an int, and str() writes it back the same). */
static int plain_integer(const Span *s) {
    const u8 *p = s->s, *end = s->s + s->n;
    if (p < end && *p == '-') {
        p++;
        if (p < end && *p == '0') return 0;
    }
    if (p == end || end - p > 18) return 0;
    for (; p < end; p++) if (*p < '0' || *p > '9') return 0;
    return 1;
}

typedef struct {
    int outcome, prio, reason, quarantine;
    Entry *e;
    size_t alen, klen; /* unregistered: app \0 event in buf[0..klen) */
} Dec;

/* The key a sample or quarantine decision hashes (SPEC 3.3): the first present,
 * non-null of the fields, else the whole payload. SLOW when its Python text is
 * not certain. */
static int sample_hash(Table *t, const Parser *ps, int field, const u8 *raw, size_t n, u8 *scratch,
                       uint32_t *out) {
    const Span *key = NULL;
    if (field >= 0) {
        if (ps->fields[field].type != T_NONE && ps->fields[field].type != T_NULL)
            key = &ps->fields[field];
    } else {
        for (int i = 2; i < 2 + t->ndefault; i++)
            if (ps->fields[i].type != T_NONE && ps->fields[i].type != T_NULL) {
                key = &ps->fields[i];
                break;
            }
    }
    const u8 *kb = raw;
    size_t kn = n;
    if (key && key->type == T_STR) {
        if (key->esc) {
            kn = unescape(key->s, key->n, scratch);
            kb = scratch;
        } else { kb = key->s; kn = key->n; }
    } else if (key) {
        if (key->type == T_OBJ || key->type == T_ARR) return SLOW;
        if (key->type == T_NUM && !plain_integer(key)) return SLOW;
        kb = key->s; /* an integer, true or false: its text is orjson's */
        kn = key->n;
    }
    *out = murmur3_32(kb, kn, t->seed);
    return 0;
}

/* SPEC section 3 for one event; SLOW: leave it to Python. buf: 3n + 32 bytes. */
static int decide(Table *t, const u8 *raw, size_t n, u8 *buf, Dec *d) {
    d->outcome = MALFORMED; d->prio = -1; d->reason = R_INVALID_JSON; d->quarantine = 0;
    d->e = NULL; d->klen = 0;
    Parser ps;
    int rc = read_event(&t->proto, raw, n, &ps);
    if (rc == READ_INVALID) return 0;
    if (rc == READ_NOT_OBJECT) { d->reason = R_NOT_OBJECT; return 0; }
    const Span *app = &ps.fields[0], *ev = &ps.fields[1];
    size_t alen;
    if (app->type == T_STR) {
        if (app->esc) {
            alen = unescape(app->s, app->n, buf);
        } else { memcpy(buf, app->s, app->n); alen = app->n; }
    } else if (app->type == T_NUM) {
        if (!plain_integer(app)) return SLOW;
        memcpy(buf, app->s, app->n);
        alen = app->n;
    } else { d->reason = app->type == T_NONE ? R_MISSING_APP : R_BAD_APP; return 0; }
    if (ev->type != T_STR) { d->reason = ev->type == T_NONE ? R_MISSING_EVENT : R_BAD_EVENT; return 0; }
    u8 *evb = buf + alen + 1;
    size_t elen;
    buf[alen] = 0;
    if (ev->esc) {
        elen = unescape(ev->s, ev->n, evb);
    } else { memcpy(evb, ev->s, ev->n); elen = ev->n; }
    u8 *scratch = buf + n + 16;
    Entry *e = lookup(t, buf, alen, evb, elen);
    if (!e) {
        if (is_monitor(t, buf, alen)) return SLOW;
        d->outcome = UNREGISTERED;
        d->alen = alen;
        d->klen = alen + 1 + elen;
        if (t->quarantine) {
            uint32_t h;
            if (sample_hash(t, &ps, -1, raw, n, scratch, &h)) return SLOW;
            d->quarantine = (int64_t)h < t->quarantine;
        }
        return 0;
    }
    if (e->kind == K_SLOW || e->guarded) return SLOW;
    d->e = e;
    if (e->kind == K_BLOCKED) { d->outcome = BLOCKED; return 0; }
    if (e->kind == K_SAMPLED) {
        uint32_t h;
        if (sample_hash(t, &ps, e->key_field, raw, n, scratch, &h)) return SLOW;
        if (h >= e->threshold) { d->outcome = SAMPLED_OUT; return 0; }
    }
    d->outcome = PASSED;
    d->prio = e->prio;
    return 0;
}

/* -- statistics ------------------------------------------------------------ */

static int count_entry(Table *t, Entry *e, int outcome, size_t size) {
    if (e->stat < 0) {
        if (t->nrows == t->caprows) {
            size_t cap = t->caprows ? t->caprows * 2 : 256;
            StatRow *r = PyMem_Realloc(t->rows, cap * sizeof(StatRow));
            if (!r) { PyErr_NoMemory(); return -1; }
            t->rows = r;
            t->caprows = cap;
        }
        StatRow *r = &t->rows[t->nrows];
        memset(r, 0, sizeof *r);
        r->e = e;
        e->stat = (int32_t)t->nrows++;
    }
    StatRow *r = &t->rows[e->stat];
    r->n[outcome]++;
    r->b[outcome] += (int64_t)size;
    return 0;
}

static int unreg_grow(Table *t) {
    size_t cap = t->unreg_mask ? (t->unreg_mask + 1) * 2 : 256;
    Unreg *u = PyMem_Calloc(cap, sizeof(Unreg));
    if (!u) { PyErr_NoMemory(); return -1; }
    for (size_t k = 0; t->unreg && k <= t->unreg_mask; k++) {
        Unreg *x = &t->unreg[k];
        if (!x->key) continue;
        size_t i = x->hash & (cap - 1);
        while (u[i].key) i = (i + 1) & (cap - 1);
        u[i] = *x;
    }
    PyMem_Free(t->unreg);
    t->unreg = u;
    t->unreg_mask = cap - 1;
    return 0;
}

static int count_unregistered(Table *t, const u8 *key, size_t alen, size_t len, size_t size) {
    if ((t->nunreg + 1) * 2 > (t->unreg_mask ? t->unreg_mask + 1 : 0) && unreg_grow(t)) return -1;
    uint32_t h = fnv_step(2166136261u, key, len);
    size_t i = h & t->unreg_mask;
    for (;; i = (i + 1) & t->unreg_mask) {
        Unreg *x = &t->unreg[i];
        if (!x->key) break;
        if (x->hash == h && x->len == len && x->alen == alen && memcmp(x->key, key, len) == 0) {
            x->n++;
            x->b += (int64_t)size;
            return 0;
        }
    }
    Unreg *x = &t->unreg[i];
    x->key = PyMem_Malloc(len ? len : 1);
    if (!x->key) { PyErr_NoMemory(); return -1; }
    memcpy(x->key, key, len);
    x->len = len;
    x->alen = alen;
    x->hash = h;
    x->n = 1;
    x->b = (int64_t)size;
    t->nunreg++;
    return 0;
}

static PyObject *row_tuple(PyObject *app, PyObject *event, const int64_t *n, const int64_t *b, int prio) {
    PyObject *counts = PyList_New(2 * N_OUT + 1);
    if (!counts) return NULL;
    for (int i = 0; i < N_OUT; i++) {
        PyList_SET_ITEM(counts, i, PyLong_FromLongLong(n[i]));
        PyList_SET_ITEM(counts, N_OUT + i, PyLong_FromLongLong(b[i]));
    }
    PyList_SET_ITEM(counts, 2 * N_OUT, PyLong_FromLong(prio));
    return Py_BuildValue("(OON)", app, event, counts);
}

/* Table.drain() -> [(app, event, row)]: the statistics since the last drain,
 * rows as telemetry.new_row() lays them out; then zero. */
static PyObject *Table_drain(Table *t, PyObject *unused) {
    (void)unused;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (size_t k = 0; k < t->nrows; k++) {
        StatRow *r = &t->rows[k];
        PyObject *row = row_tuple(r->e->app, r->e->event, r->n, r->b,
                                  r->n[PASSED] ? r->e->prio : -1);
        if (!row || PyList_Append(out, row)) { Py_XDECREF(row); Py_DECREF(out); return NULL; }
        Py_DECREF(row);
        r->e->stat = -1;
    }
    t->nrows = 0;
    int64_t n[N_OUT] = {0}, b[N_OUT] = {0};
    for (size_t k = 0; t->unreg && k <= t->unreg_mask; k++) {
        Unreg *x = &t->unreg[k];
        if (!x->key) continue;
        size_t alen = x->alen;
        PyObject *app = PyUnicode_DecodeUTF8((const char *)x->key, (Py_ssize_t)alen, NULL);
        PyObject *ev = PyUnicode_DecodeUTF8((const char *)x->key + alen + 1,
                                            (Py_ssize_t)(x->len - alen - 1), NULL);
        n[UNREGISTERED] = x->n;
        b[UNREGISTERED] = x->b;
        PyObject *row = app && ev ? row_tuple(app, ev, n, b, -1) : NULL;
        Py_XDECREF(app);
        Py_XDECREF(ev);
        if (!row || PyList_Append(out, row)) { Py_XDECREF(row); Py_DECREF(out); return NULL; }
        Py_DECREF(row);
        PyMem_Free(x->key);
        x->key = NULL;
    }
    t->nunreg = 0;
    n[UNREGISTERED] = b[UNREGISTERED] = 0;
    PyObject *empty = PyUnicode_FromString("");
    for (int r = 0; r < N_REASONS; r++) {
        if (!t->mal[r][0]) continue;
        n[MALFORMED] = t->mal[r][0];
        b[MALFORMED] = t->mal[r][1];
        PyObject *reason = PyUnicode_FromString(REASONS[r]);
        PyObject *row = reason ? row_tuple(empty, reason, n, b, -1) : NULL;
        Py_XDECREF(reason);
        if (!row || PyList_Append(out, row)) { Py_XDECREF(row); Py_DECREF(out); Py_DECREF(empty); return NULL; }
        Py_DECREF(row);
        t->mal[r][0] = t->mal[r][1] = 0;
    }
    Py_DECREF(empty);
    return out;
}

/* Table.guard(keys): the (app, event) pairs under a surge guard, replacing the
 * previous set; their events go to Python, which applies the guard. */
static PyObject *Table_guard(Table *t, PyObject *keys) {
    for (size_t k = 0; k < t->nguarded; k++) t->entries[t->guarded[k]].guarded = 0;
    t->nguarded = 0;
    PyObject *it = PyObject_GetIter(keys);
    if (!it) return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        PyObject *a, *e;
        if (!PyArg_ParseTuple(item, "UU", &a, &e)) { Py_DECREF(item); Py_DECREF(it); return NULL; }
        Py_ssize_t alen, elen;
        const char *as = PyUnicode_AsUTF8AndSize(a, &alen), *es = PyUnicode_AsUTF8AndSize(e, &elen);
        Entry *x = as && es ? lookup(t, (const u8 *)as, (size_t)alen, (const u8 *)es, (size_t)elen) : NULL;
        Py_DECREF(item);
        if (PyErr_Occurred()) { Py_DECREF(it); return NULL; }
        if (!x || x->guarded) continue;
        int32_t *g = PyMem_Realloc(t->guarded, (t->nguarded + 1) * sizeof(int32_t));
        if (!g) { Py_DECREF(it); return PyErr_NoMemory(); }
        t->guarded = g;
        t->guarded[t->nguarded++] = (int32_t)(x - t->entries);
        x->guarded = 1;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* Table.decide(raw) -> (outcome, priority, reason or None, quarantine), or
 * None when the event is left to Python: for the tests against the core. */
static PyObject *Table_decide(Table *t, PyObject *arg) {
    char *raw;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &raw, &n)) return NULL;
    u8 *buf = PyMem_Malloc((size_t)n * 3 + 32);
    if (!buf) return PyErr_NoMemory();
    Dec d;
    int rc = decide(t, (const u8 *)raw, (size_t)n, buf, &d);
    PyMem_Free(buf);
    if (rc == SLOW) Py_RETURN_NONE;
    if (d.outcome == MALFORMED)
        return Py_BuildValue("(iisO)", d.outcome, d.prio, REASONS[d.reason], Py_False);
    return Py_BuildValue("(iiOO)", d.outcome, d.prio, Py_None, d.quarantine ? Py_True : Py_False);
}

static const HSet *hset_of(Table *t, PyObject *cache, PyObject *headers) {
    if (headers == Py_None) return NULL;
    PyObject *id = PyLong_FromVoidPtr(headers);
    if (!id) return NULL;
    PyObject *got = PyDict_GetItemWithError(cache, id);
    if (got) { Py_DECREF(id); return &t->hsets[PyLong_AsSsize_t(got)]; }
    if (PyErr_Occurred() || !PyList_Check(headers) || PyList_GET_SIZE(headers) > 4) {
        Py_DECREF(id);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "headers: a list of up to 4 pairs");
        return NULL;
    }
    HSet *h = &t->hsets[t->nh];
    h->n = (int)PyList_GET_SIZE(headers);
    for (int i = 0; i < h->n; i++) {
        PyObject *name, *val;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(headers, i), "US", &name, &val)) { Py_DECREF(id); return NULL; }
        h->name[i] = PyUnicode_AsUTF8(name);
        h->val[i] = PyBytes_AS_STRING(val);
        h->vlen[i] = PyBytes_GET_SIZE(val);
        if (!h->name[i]) { Py_DECREF(id); return NULL; }
    }
    PyObject *idx = PyLong_FromSize_t(t->nh++);
    int rc = idx ? PyDict_SetItem(cache, id, idx) : -1;
    Py_XDECREF(idx);
    Py_DECREF(id);
    if (rc || PyList_Append(t->keep, headers)) return NULL;
    return h;
}

/* Table(apps, classify, plain_headers, version, seed, app_field, event_field,
 *       sample_keys, quarantine_threshold, stats)
 * apps: the Decider's {app: _CompiledApp}; classify(rule) for a rule that is
 * not a plain priority -> (kind, priority, threshold, sample key or None,
 * headers or None). fastpath/table.py is the only caller. */
static int Table_init(Table *t, PyObject *args, PyObject *kw) {
    PyObject *apps, *classify, *plain, *keys;
    const char *version;
    unsigned long seed;
    const char *app_field, *event_field;
    long long quarantine;
    int stats;
    if (!PyArg_ParseTuple(args, "O!OO!skssO!Lp:Table", &PyDict_Type, &apps, &classify, &PyList_Type,
                          &plain, &version, &seed, &app_field, &event_field, &PyTuple_Type, &keys,
                          &quarantine, &stats))
        return -1;
    if (t->keep) { PyErr_SetString(PyExc_RuntimeError, "Table: already built"); return -1; }
    (void)kw;
    t->keep = PyList_New(0);
    if (!t->keep || PyList_Append(t->keep, apps) || PyList_Append(t->keep, args)) return -1;
    t->seed = (uint32_t)seed;
    t->quarantine = quarantine;
    t->stats = stats;
    snprintf(t->version, sizeof t->version, "%s", version);
    t->vlen = (Py_ssize_t)strlen(t->version);
    field_index(t, app_field);
    field_index(t, event_field);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(keys); i++) {
        const char *k = PyUnicode_AsUTF8(PyTuple_GET_ITEM(keys, i));
        if (!k) return -1;
        if (field_index(t, k) < 0) { PyErr_SetString(PyExc_ValueError, "too many sample keys"); return -1; }
        t->ndefault++;
    }
    /* Count the rules and the monitor-mode apps first: one allocation each. */
    size_t total = 0, nmon = 0;
    Py_ssize_t pos = 0;
    PyObject *app, *capp;
    while (PyDict_Next(apps, &pos, &app, &capp)) {
        PyObject *events = PyObject_GetAttrString(capp, "events");
        PyObject *mp = PyObject_GetAttrString(capp, "monitor_priority");
        if (!events || !mp || !PyDict_Check(events)) { Py_XDECREF(events); Py_XDECREF(mp); return -1; }
        total += (size_t)PyDict_GET_SIZE(events);
        nmon += PyLong_AsLong(mp) >= 0;
        Py_DECREF(events);
        Py_DECREF(mp);
    }
    size_t size = 16;
    while (size < total * 2) size *= 2;
    t->entries = PyMem_Calloc(total ? total : 1, sizeof(Entry));
    t->slots = PyMem_Calloc(size, sizeof(uint32_t));
    t->mask = size - 1;
    size_t msize = 16;
    while (msize < nmon * 2) msize *= 2;
    t->mon = PyMem_Calloc(msize, sizeof(uint32_t));
    t->mon_apps = PyMem_Calloc(nmon ? nmon : 1, sizeof(PyObject *));
    t->mon_mask = msize - 1;
    /* Distinct header lists: 3 plain, plus one per (priority, rate) of special rules. */
    t->hsets = PyMem_Calloc(4096, sizeof(HSet));
    if (!t->entries || !t->slots || !t->mon || !t->mon_apps || !t->hsets) { PyErr_NoMemory(); return -1; }
    PyObject *hcache = PyDict_New(), *rcache = PyDict_New();
    if (!hcache || !rcache) { Py_XDECREF(hcache); Py_XDECREF(rcache); return -1; }
    const HSet *plain_h[3];
    int ok = PyList_GET_SIZE(plain) == 3;
    for (int p = 0; ok && p < 3; p++) {
        plain_h[p] = hset_of(t, hcache, PyList_GET_ITEM(plain, p));
        ok = plain_h[p] || !PyErr_Occurred();
    }
    if (!ok) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "plain_headers: three lists");
        goto fail;
    }
    pos = 0;
    while (PyDict_Next(apps, &pos, &app, &capp)) {
        Py_ssize_t alen;
        const char *as = PyUnicode_AsUTF8AndSize(app, &alen);
        PyObject *events = PyObject_GetAttrString(capp, "events");
        PyObject *mp = PyObject_GetAttrString(capp, "monitor_priority");
        if (!as || !events || !mp) { Py_XDECREF(events); Py_XDECREF(mp); goto fail; }
        if (PyLong_AsLong(mp) >= 0) {
            uint32_t h = fnv_step(2166136261u, (const u8 *)as, (size_t)alen);
            size_t i = h & t->mon_mask;
            while (t->mon[i]) i = (i + 1) & t->mon_mask;
            t->mon_apps[t->nmon] = app;
            t->mon[i] = (uint32_t)++t->nmon;
        }
        Py_DECREF(mp);
        Py_ssize_t epos = 0;
        PyObject *event, *rule;
        while (PyDict_Next(events, &epos, &event, &rule)) {
            Entry *e = &t->entries[t->n];
            e->app = app;
            e->event = event;
            Py_ssize_t elen;
            const char *es = PyUnicode_AsUTF8AndSize(event, &elen);
            e->stat = -1;
            e->key_field = -1;
            if (!es) { Py_DECREF(events); goto fail; }
            e->hset = NO_HSET;
            if (PyLong_CheckExact(rule)) {
                e->kind = K_PLAIN;
                e->prio = (int8_t)PyLong_AsLong(rule);
                if (plain_h[e->prio]) e->hset = (uint16_t)(plain_h[e->prio] - t->hsets);
            } else {
                PyObject *info = PyDict_GetItemWithError(rcache, rule);
                if (!info) {
                    if (PyErr_Occurred()) { Py_DECREF(events); goto fail; }
                    info = PyObject_CallOneArg(classify, rule);
                    if (!info || PyDict_SetItem(rcache, rule, info)) { Py_XDECREF(info); Py_DECREF(events); goto fail; }
                    Py_DECREF(info); /* rcache holds it */
                }
                int kind, prio;
                long long thr;
                PyObject *key, *headers;
                if (!PyArg_ParseTuple(info, "iiLOO", &kind, &prio, &thr, &key, &headers)) { Py_DECREF(events); goto fail; }
                e->kind = (int8_t)kind;
                e->prio = (int8_t)prio;
                if (thr > (long long)UINT32_MAX) e->kind = K_SLOW;
                else e->threshold = thr < 0 ? 0 : (uint32_t)thr;
                if (key != Py_None) {
                    const char *k = PyUnicode_AsUTF8(key);
                    int f = k ? field_index(t, k) : -1;
                    if (!k) { Py_DECREF(events); goto fail; }
                    if (f < 0) e->kind = K_SLOW; /* more distinct keys than the parser keeps */
                    e->key_field = (int8_t)f;
                }
                if (t->nh == 4096) e->kind = K_SLOW;
                else {
                    const HSet *hs = hset_of(t, hcache, headers);
                    if (!hs && PyErr_Occurred()) { Py_DECREF(events); goto fail; }
                    if (hs) e->hset = (uint16_t)(hs - t->hsets);
                }
            }
            e->hash = key_hash((const u8 *)as, (size_t)alen, (const u8 *)es, (size_t)elen);
            size_t i = e->hash & t->mask;
            while (t->slots[i]) i = (i + 1) & t->mask;
            t->slots[i] = (uint32_t)++t->n;
            if (t->n > total) { Py_DECREF(events); PyErr_SetString(PyExc_RuntimeError, "rules changed while built"); goto fail; }
        }
        Py_DECREF(events);
    }
    /* The rule cache holds the classify tuples whose key strings the parser names. */
    if (PyList_Append(t->keep, rcache)) goto fail;
    Py_DECREF(hcache);
    Py_DECREF(rcache);
    return 0;
fail:
    Py_DECREF(hcache);
    Py_DECREF(rcache);
    return -1;
}

static void Table_dealloc(Table *t) {
    for (size_t k = 0; t->unreg && k <= t->unreg_mask; k++) PyMem_Free(t->unreg[k].key);
    PyMem_Free(t->unreg);
    PyMem_Free(t->entries);
    PyMem_Free(t->slots);
    PyMem_Free(t->mon);
    PyMem_Free(t->mon_apps);
    PyMem_Free(t->hsets);
    PyMem_Free(t->rows);
    PyMem_Free(t->guarded);
    Py_XDECREF(t->keep);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *Table_len(Table *t, void *unused) { (void)unused; return PyLong_FromSize_t(t->n); }

static PyMethodDef Table_methods[] = {
    {"decide", (PyCFunction)Table_decide, METH_O, "decide(raw) -> (outcome, priority, reason, quarantine) | None"},
    {"drain", (PyCFunction)Table_drain, METH_NOARGS, "drain() -> [(app, event, row)]"},
    {"guard", (PyCFunction)Table_guard, METH_O, "guard([(app, event)]): events left to Python"},
    {NULL}};
static PyGetSetDef Table_getset[] = {{"rule_count", (getter)Table_len, NULL, NULL, NULL}, {NULL}};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "etl_gate.fastpath._fastpath.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
};

/* -- the producer ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    rd_kafka_t *rk;
    PyObject *on_error;
    rd_kafka_topic_t *out[N_OUTPUTS];
    int32_t nparts[N_OUTPUTS];
    /* since the last counts(): events, bytes in, per outcome, per output */
    int64_t n, nbytes, outcomes[N_OUT], out_events[N_OUTPUTS], out_bytes[N_OUTPUTS];
    u8 *buf;
    size_t bufcap;
} Producer;

static PyObject *kafka_exception(rd_kafka_resp_err_t err, const char *reason) {
    PyObject *ke = PyObject_CallFunction(KafkaErrorType, "is", (int)err, reason ? reason : rd_kafka_err2str(err));
    if (ke) {
        PyErr_SetObject(KafkaExceptionType, ke);
        Py_DECREF(ke);
    }
    return NULL;
}

/* Delivery reports: failures only (delivery.report.only.error), called from
 * poll/flush, which run without the GIL. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    Producer *self = opaque;
    if (!m->err) return;
    PyGILState_STATE g = PyGILState_Ensure();
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    PyObject *r = PyObject_CallFunction(
        self->on_error, "isNiy#y#L", (int)m->err, rd_kafka_err2str(m->err),
        PyUnicode_FromString(rd_kafka_topic_name(m->rkt)), (int)m->partition, (const char *)m->payload,
        (Py_ssize_t)(m->payload ? m->len : 0), (const char *)m->key, (Py_ssize_t)m->key_len,
        (long long)ts);
    if (!r) PyErr_WriteUnraisable(self->on_error);
    Py_XDECREF(r);
    PyGILState_Release(g);
}

static int Producer_init(Producer *self, PyObject *args, PyObject *kw) {
    PyObject *conf, *on_error;
    static char *kwlist[] = {"config", "on_error", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O:Producer", kwlist, &PyDict_Type, &conf, &on_error))
        return -1;
    if (self->rk) { PyErr_SetString(PyExc_RuntimeError, "Producer: already initialised"); return -1; }
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(conf, &pos, &k, &v)) {
        PyObject *vs = PyBool_Check(v) ? PyUnicode_FromString(v == Py_True ? "true" : "false") : PyObject_Str(v);
        const char *ks = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
        const char *vv = vs ? PyUnicode_AsUTF8(vs) : NULL;
        if (!ks || !vv) {
            Py_XDECREF(vs);
            rd_kafka_conf_destroy(c);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "config: string keys");
            return -1;
        }
        if (rd_kafka_conf_set(c, ks, vv, err, sizeof err) != RD_KAFKA_CONF_OK) {
            Py_DECREF(vs);
            rd_kafka_conf_destroy(c);
            kafka_exception(RD_KAFKA_RESP_ERR__INVALID_ARG, err);
            return -1;
        }
        Py_DECREF(vs);
    }
    if (rd_kafka_conf_set(c, "delivery.report.only.error", "true", err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(c);
        kafka_exception(RD_KAFKA_RESP_ERR__INVALID_ARG, err);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_conf_set_opaque(c, self);
    Py_INCREF(on_error);
    self->on_error = on_error;
    self->rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!self->rk) { kafka_exception(RD_KAFKA_RESP_ERR__INVALID_ARG, err); return -1; }
    return 0;
}

static void Producer_close_handles(Producer *self) {
    if (!self->rk) return;
    for (int i = 0; i < N_OUTPUTS; i++)
        if (self->out[i]) { rd_kafka_topic_destroy(self->out[i]); self->out[i] = NULL; }
    rd_kafka_t *rk = self->rk;
    self->rk = NULL;
    Py_BEGIN_ALLOW_THREADS
    rd_kafka_destroy(rk);
    Py_END_ALLOW_THREADS
}

static void Producer_dealloc(Producer *self) {
    Producer_close_handles(self);
    Py_XDECREF(self->on_error);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_RK(self) if (!(self)->rk) { PyErr_SetString(PyExc_RuntimeError, "producer closed"); return NULL; }

static PyObject *Producer_poll(Producer *self, PyObject *arg) {
    NEED_RK(self);
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = rd_kafka_poll(self->rk, timeout < 0 ? -1 : (int)(timeout * 1000));
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}

/* flush(timeout) -> outputs still unacknowledged. */
static PyObject *Producer_flush(Producer *self, PyObject *args) {
    NEED_RK(self);
    double timeout = -1;
    if (!PyArg_ParseTuple(args, "|d:flush", &timeout)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rd_kafka_flush(self->rk, timeout < 0 ? -1 : (int)(timeout * 1000));
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rd_kafka_outq_len(self->rk));
}

static Py_ssize_t Producer_length(Producer *self) { return self->rk ? rd_kafka_outq_len(self->rk) : 0; }

/* One output; a full queue waits for acknowledgements (as the Python worker
 * does on BufferError). Headers are taken over by librdkafka. */
static int produce_one(Producer *self, rd_kafka_topic_t *rkt, const char *topic, int32_t part, const char *v,
                size_t vlen, const char *k, size_t klen, int64_t ts, rd_kafka_headers_t *h) {
    for (;;) {
        rd_kafka_resp_err_t err = rkt
            ? rd_kafka_producev(self->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(part),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)v, vlen),
                                RD_KAFKA_V_KEY(k, klen), RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_END)
            : rd_kafka_producev(self->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)v, vlen),
                                RD_KAFKA_V_KEY(k, klen), RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_END);
        if (!err) return 0;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (h) rd_kafka_headers_destroy(h);
            kafka_exception(err, NULL);
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        rd_kafka_poll(self->rk, 50);
        Py_END_ALLOW_THREADS
    }
}

/* produce(topic, value, key=None, partition=-1, on_delivery=None, callback=None,
 *         timestamp=0, headers=None): confluent_kafka.Producer.produce's
 * positional order (the worker's Python path calls it so). Never raises
 * BufferError: a full queue waits. */
static PyObject *Producer_produce(Producer *self, PyObject *args) {
    NEED_RK(self);
    const char *topic;
    Py_buffer value = {0}, key = {0};
    PyObject *valueo = Py_None, *keyo = Py_None, *ondel = Py_None, *cb = Py_None, *headers = Py_None;
    int partition = -1;
    long long ts = 0;
    if (!PyArg_ParseTuple(args, "s|OOiOOLO:produce", &topic, &valueo, &keyo, &partition, &ondel, &cb,
                          &ts, &headers))
        return NULL;
    if (ondel != Py_None || cb != Py_None) {
        PyErr_SetString(PyExc_ValueError, "produce: per-message callbacks are not supported");
        return NULL;
    }
    if (valueo != Py_None && PyObject_GetBuffer(valueo, &value, PyBUF_SIMPLE)) return NULL;
    if (keyo != Py_None && PyObject_GetBuffer(keyo, &key, PyBUF_SIMPLE)) {
        PyBuffer_Release(&value);
        return NULL;
    }
    rd_kafka_headers_t *h = NULL;
    int rc = -1;
    if (headers != Py_None) {
        PyObject *seq = PySequence_Fast(headers, "headers: a list of (name, value) pairs");
        if (!seq) goto done;
        h = rd_kafka_headers_new((size_t)PySequence_Fast_GET_SIZE(seq));
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            const char *name;
            Py_ssize_t nlen;
            Py_buffer hv = {0};
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyArg_ParseTuple(pair, "s#y*", &name, &nlen, &hv)) {
                Py_DECREF(seq);
                rd_kafka_headers_destroy(h);
                goto done;
            }
            rd_kafka_header_add(h, name, nlen, hv.buf, hv.len);
            PyBuffer_Release(&hv);
        }
        Py_DECREF(seq);
    }
    rc = produce_one(self, NULL, topic, partition, value.buf, value.buf ? (size_t)value.len : 0, key.buf,
              key.buf ? (size_t)key.len : 0, ts < 0 ? 0 : ts, h);
done:
    PyBuffer_Release(&value);
    PyBuffer_Release(&key);
    if (rc) return NULL;
    Py_RETURN_NONE;
}

/* partition_counts(names, timeout) -> [count or None (missing)], from the
 * broker's metadata; KafkaException when it cannot be reached. */
static PyObject *Producer_partition_counts(Producer *self, PyObject *args) {
    NEED_RK(self);
    PyObject *names;
    double timeout;
    if (!PyArg_ParseTuple(args, "O!d:partition_counts", &PyList_Type, &names, &timeout)) return NULL;
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t err;
    Py_BEGIN_ALLOW_THREADS
    err = rd_kafka_metadata(self->rk, 1, NULL, &md, (int)(timeout * 1000));
    Py_END_ALLOW_THREADS
    if (err) return kafka_exception(err, NULL);
    PyObject *out = PyList_New(PyList_GET_SIZE(names));
    for (Py_ssize_t i = 0; out && i < PyList_GET_SIZE(names); i++) {
        const char *name = PyUnicode_AsUTF8(PyList_GET_ITEM(names, i));
        if (!name) { Py_CLEAR(out); break; }
        PyObject *v = Py_None;
        for (int k = 0; k < md->topic_cnt; k++)
            if (strcmp(md->topics[k].topic, name) == 0 && !md->topics[k].err && md->topics[k].partition_cnt > 0)
                v = PyLong_FromLong(md->topics[k].partition_cnt);
        if (v == Py_None) Py_INCREF(v);
        PyList_SET_ITEM(out, i, v);
    }
    rd_kafka_metadata_destroy(md);
    return out;
}

/* set_outputs(names, partitions): the five outputs route() writes (P0, P1, P2,
 * DLQ, quarantine or None) and their partition counts. */
static PyObject *Producer_set_outputs(Producer *self, PyObject *args) {
    NEED_RK(self);
    PyObject *names, *parts;
    if (!PyArg_ParseTuple(args, "O!O!:set_outputs", &PyList_Type, &names, &PyList_Type, &parts)) return NULL;
    if (PyList_GET_SIZE(names) != N_OUTPUTS || PyList_GET_SIZE(parts) != N_OUTPUTS) {
        PyErr_SetString(PyExc_ValueError, "set_outputs: five names and five partition counts");
        return NULL;
    }
    for (int i = 0; i < N_OUTPUTS; i++) {
        if (self->out[i]) { rd_kafka_topic_destroy(self->out[i]); self->out[i] = NULL; }
        PyObject *name = PyList_GET_ITEM(names, i);
        if (name == Py_None) continue;
        const char *s = PyUnicode_AsUTF8(name);
        long p = PyLong_AsLong(PyList_GET_ITEM(parts, i));
        if (!s || (p == -1 && PyErr_Occurred())) return NULL;
        if (p < 1) { PyErr_SetString(PyExc_ValueError, "set_outputs: partition counts >= 1"); return NULL; }
        self->out[i] = rd_kafka_topic_new(self->rk, s, NULL);
        self->nparts[i] = (int32_t)p;
    }
    Py_RETURN_NONE;
}

/* counts() -> (events, bytes in, per outcome, events per output, bytes per
 * output) since the last call. */
static PyObject *Producer_counts(Producer *self, PyObject *unused) {
    (void)unused;
    PyObject *oc = PyList_New(N_OUT), *oe = PyList_New(N_OUTPUTS), *ob = PyList_New(N_OUTPUTS);
    if (!oc || !oe || !ob) { Py_XDECREF(oc); Py_XDECREF(oe); Py_XDECREF(ob); return NULL; }
    for (int i = 0; i < N_OUT; i++) { PyList_SET_ITEM(oc, i, PyLong_FromLongLong(self->outcomes[i])); self->outcomes[i] = 0; }
    for (int i = 0; i < N_OUTPUTS; i++) {
        PyList_SET_ITEM(oe, i, PyLong_FromLongLong(self->out_events[i]));
        PyList_SET_ITEM(ob, i, PyLong_FromLongLong(self->out_bytes[i]));
        self->out_events[i] = self->out_bytes[i] = 0;
    }
    PyObject *r = Py_BuildValue("(LLNNN)", (long long)self->n, (long long)self->nbytes, oc, oe, ob);
    self->n = self->nbytes = 0;
    return r;
}

static PyObject *s_error, *s_value, *s_key, *s_partition, *s_offset, *s_timestamp, *s_topic;

static inline PyObject *call0(PyObject *m, PyObject *name) {
    return PyObject_VectorcallMethod(name, &m, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* The DLQ's and the quarantine topic's headers (the worker's _source_headers). */
static rd_kafka_headers_t *source_headers(PyObject *m, const char *why, int32_t part, const Table *t) {
    PyObject *topic = call0(m, s_topic), *off = call0(m, s_offset);
    if (!topic || !off) { Py_XDECREF(topic); Py_XDECREF(off); return NULL; }
    Py_ssize_t tlen;
    const char *ts = PyUnicode_Check(topic) ? PyUnicode_AsUTF8AndSize(topic, &tlen) : "";
    if (!ts) { Py_DECREF(topic); Py_DECREF(off); return NULL; }
    if (!PyUnicode_Check(topic)) tlen = 0;
    char pbuf[16], obuf[24];
    snprintf(pbuf, sizeof pbuf, "%d", (int)part);
    snprintf(obuf, sizeof obuf, "%lld", PyLong_AsLongLong(off));
    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    rd_kafka_header_add(h, "error", 5, why, -1);
    rd_kafka_header_add(h, "source-topic", 12, ts, tlen);
    rd_kafka_header_add(h, "source-partition", 16, pbuf, -1);
    rd_kafka_header_add(h, "source-offset", 13, obuf, -1);
    rd_kafka_header_add(h, "rules-version", 13, t->version, t->vlen);
    Py_DECREF(topic);
    Py_DECREF(off);
    return h;
}

/* route(msgs, start, table, last) -> stop. Decides and routes msgs[start:]
 * until the end or the first message left to Python (returns its index);
 * last[partition] = the last message routed of each partition. */
static PyObject *Producer_route(Producer *self, PyObject *const *args, Py_ssize_t nargs) {
    NEED_RK(self);
    if (nargs != 4 || !PyList_Check(args[0]) || !PyObject_TypeCheck(args[2], &TableType)
        || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "route(msgs: list, start: int, table: Table, last: dict)");
        return NULL;
    }
    if (!self->out[0] || !self->out[1] || !self->out[2] || !self->out[O_DLQ]) {
        PyErr_SetString(PyExc_RuntimeError, "route: set_outputs() first");
        return NULL;
    }
    PyObject *msgs = args[0], *last = args[3];
    Table *t = (Table *)args[2];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]), n = PyList_GET_SIZE(msgs);
    if (i == -1 && PyErr_Occurred()) return NULL;
    PyObject *prev = NULL; /* the message before, and its partition */
    long prev_part = -1;
    int failed = 0;
    for (; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(msgs, i);
        PyObject *err = call0(m, s_error);
        if (!err) { failed = 1; break; }
        Py_DECREF(err);
        if (err != Py_None) break;
        PyObject *val = call0(m, s_value);
        if (!val) { failed = 1; break; }
        if (!PyBytes_CheckExact(val)) { Py_DECREF(val); break; } /* a tombstone: Python's */
        const u8 *raw = (const u8 *)PyBytes_AS_STRING(val);
        size_t size = (size_t)PyBytes_GET_SIZE(val);
        if (size * 3 + 32 > self->bufcap) {
            u8 *b = PyMem_Realloc(self->buf, size * 3 + 32);
            if (!b) { Py_DECREF(val); PyErr_NoMemory(); failed = 1; break; }
            self->buf = b;
            self->bufcap = size * 3 + 32;
        }
        Dec d;
        if (decide(t, raw, size, self->buf, &d) == SLOW) { Py_DECREF(val); break; }
        PyObject *tso = call0(m, s_timestamp), *po = call0(m, s_partition);
        long part = po ? PyLong_AsLong(po) : -1;
        long long ts = tso && PyTuple_Check(tso) && PyTuple_GET_SIZE(tso) == 2
                           ? PyLong_AsLongLong(PyTuple_GET_ITEM(tso, 1)) : 0;
        Py_XDECREF(tso);
        Py_XDECREF(po);
        if (PyErr_Occurred()) { Py_DECREF(val); failed = 1; break; }
        if (ts < 0) ts = 0; /* none: the producer stamps the output with its own clock */
        int o = d.outcome == PASSED ? d.prio
              : d.outcome == MALFORMED ? O_DLQ
              : d.quarantine && self->out[O_QUARANTINE] ? O_QUARANTINE : -1;
        if (o >= 0) {
            PyObject *key = call0(m, s_key);
            if (!key) { Py_DECREF(val); failed = 1; break; }
            rd_kafka_headers_t *h = NULL;
            if (o < O_DLQ) {
                if (d.e->hset != NO_HSET) {
                    const HSet *hs = &t->hsets[d.e->hset];
                    h = rd_kafka_headers_new(4);
                    for (int k = 0; k < hs->n; k++)
                        rd_kafka_header_add(h, hs->name[k], -1, hs->val[k], hs->vlen[k]);
                }
            } else {
                h = source_headers(m, o == O_DLQ ? REASONS[d.reason] : "unregistered", (int32_t)part, t);
                if (!h) { Py_DECREF(key); Py_DECREF(val); failed = 1; break; }
            }
            int rc = produce_one(self, self->out[o], NULL, (int32_t)(part % self->nparts[o]), (const char *)raw, size,
                          PyBytes_Check(key) ? PyBytes_AS_STRING(key) : NULL,
                          PyBytes_Check(key) ? (size_t)PyBytes_GET_SIZE(key) : 0, ts, h);
            Py_DECREF(key);
            if (rc) { Py_DECREF(val); failed = 1; break; }
            self->out_events[o]++;
            self->out_bytes[o] += (int64_t)size;
        }
        if (t->stats) {
            int rc = d.outcome == MALFORMED ? (t->mal[d.reason][0]++, t->mal[d.reason][1] += (int64_t)size, 0)
                   : d.outcome == UNREGISTERED ? count_unregistered(t, self->buf, d.alen, d.klen, size)
                   : count_entry(t, d.e, d.outcome, size);
            if (rc) { Py_DECREF(val); failed = 1; break; }
        }
        Py_DECREF(val);
        self->n++;
        self->nbytes += (int64_t)size;
        self->outcomes[d.outcome]++;
        if (prev && part != prev_part) {
            PyObject *p = PyLong_FromLong(prev_part);
            int rc = p ? PyDict_SetItem(last, p, prev) : -1;
            Py_XDECREF(p);
            if (rc) { failed = 1; break; }
        }
        prev = m;
        prev_part = part;
    }
    if (prev && !failed) {
        PyObject *p = PyLong_FromLong(prev_part);
        int rc = p ? PyDict_SetItem(last, p, prev) : -1;
        Py_XDECREF(p);
        if (rc) failed = 1;
    }
    if (failed) return NULL;
    return PyLong_FromSsize_t(i);
}

/* purge(): drops every queued and in-flight output; each is reported failed
 * (_PURGE_QUEUE / _PURGE_INFLIGHT) at the next poll or flush. */
static PyObject *Producer_purge(Producer *self, PyObject *unused) {
    (void)unused;
    NEED_RK(self);
    rd_kafka_resp_err_t err = rd_kafka_purge(self->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    if (err) return kafka_exception(err, NULL);
    Py_RETURN_NONE;
}

static PyObject *Producer_close(Producer *self, PyObject *unused) {
    (void)unused;
    Producer_close_handles(self);
    Py_RETURN_NONE;
}

static PyMethodDef Producer_methods[] = {
    {"produce", (PyCFunction)Producer_produce, METH_VARARGS, NULL},
    {"poll", (PyCFunction)Producer_poll, METH_O, NULL},
    {"flush", (PyCFunction)Producer_flush, METH_VARARGS, NULL},
    {"partition_counts", (PyCFunction)Producer_partition_counts, METH_VARARGS, NULL},
    {"set_outputs", (PyCFunction)Producer_set_outputs, METH_VARARGS, NULL},
    {"route", (PyCFunction)(void (*)(void))Producer_route, METH_FASTCALL, NULL},
    {"counts", (PyCFunction)Producer_counts, METH_NOARGS, NULL},
    {"purge", (PyCFunction)Producer_purge, METH_NOARGS, NULL},
    {"close", (PyCFunction)Producer_close, METH_NOARGS, NULL},
    {NULL}};

static PySequenceMethods Producer_seq = {.sq_length = (lenfunc)Producer_length};

static PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "etl_gate.fastpath._fastpath.Producer",
    .tp_basicsize = sizeof(Producer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Producer_init,
    .tp_dealloc = (destructor)Producer_dealloc,
    .tp_methods = Producer_methods,
    .tp_as_sequence = &Producer_seq,
};

static PyObject *librdkafka_version(PyObject *m, PyObject *unused) {
    (void)m; (void)unused;
    return PyUnicode_FromString(rd_kafka_version_str());
}

static PyMethodDef module_methods[] = {
    {"librdkafka_version", librdkafka_version, METH_NOARGS, "the librdkafka this module runs with"},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyObject *ck = PyImport_ImportModule("confluent_kafka");
    if (!ck) return NULL;
    KafkaErrorType = PyObject_GetAttrString(ck, "KafkaError");
    KafkaExceptionType = PyObject_GetAttrString(ck, "KafkaException");
    Py_DECREF(ck);
    if (!KafkaErrorType || !KafkaExceptionType) return NULL;
    if (!(s_error = PyUnicode_InternFromString("error")) || !(s_value = PyUnicode_InternFromString("value"))
        || !(s_key = PyUnicode_InternFromString("key"))
        || !(s_partition = PyUnicode_InternFromString("partition"))
        || !(s_offset = PyUnicode_InternFromString("offset"))
        || !(s_timestamp = PyUnicode_InternFromString("timestamp"))
        || !(s_topic = PyUnicode_InternFromString("topic")))
        return NULL;
    if (PyType_Ready(&TableType) < 0 || PyType_Ready(&ProducerType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&moduledef);
    if (!mod) return NULL;
    Py_INCREF(&TableType);
    Py_INCREF(&ProducerType);
    if (PyModule_AddObject(mod, "Table", (PyObject *)&TableType)
        || PyModule_AddObject(mod, "Producer", (PyObject *)&ProducerType)
        || PyModule_AddIntConstant(mod, "K_PLAIN", K_PLAIN) || PyModule_AddIntConstant(mod, "K_SAMPLED", K_SAMPLED)
        || PyModule_AddIntConstant(mod, "K_BLOCKED", K_BLOCKED) || PyModule_AddIntConstant(mod, "K_SLOW", K_SLOW)) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
