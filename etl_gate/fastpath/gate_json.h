/* gate_json.h: reading the few fields the gate decides on straight from an
 * event's bytes (SPEC section 1), shared by the gate's C fast path
 * (etl_gate/fastpath/_fastpath.c) and bench/native_gate.c.
 *
 * The whole value is validated as JSON (RFC 8259, UTF-8, nesting up to
 * MAX_DEPTH); the spans of chosen top-level members are kept (the last of
 * duplicate keys, as the Python reader). Header-only: static functions, one
 * copy per program that includes it.
 */
#ifndef ETL_GATE_JSON_H
#define ETL_GATE_JSON_H
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef unsigned char u8;

/* -- MurmurHash3 x86 32-bit, as mmh3.hash(key, seed, signed=False) -------- */

static uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static uint32_t murmur3_32(const u8 *data, size_t len, uint32_t seed) {
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    uint32_t h = seed;
    size_t nblocks = len / 4;
    for (size_t i = 0; i < nblocks; i++) {
        uint32_t k;
        memcpy(&k, data + 4 * i, 4); /* little-endian hosts only (x86, arm64) */
        k *= c1; k = rotl32(k, 15); k *= c2;
        h ^= k; h = rotl32(h, 13); h = h * 5 + 0xe6546b64;
    }
    const u8 *tail = data + 4 * nblocks;
    uint32_t k = 0;
    switch (len & 3) {
    case 3: k ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1: k ^= tail[0]; k *= c1; k = rotl32(k, 15); k *= c2; h ^= k;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16;
    return h;
}

/* -- JSON: validate the whole value, keep the spans of a few top-level fields -- */

enum { T_NONE, T_STR, T_NUM, T_TRUE, T_FALSE, T_NULL, T_OBJ, T_ARR };
#define MAX_FIELDS 8
#define MAX_DEPTH 1024

typedef struct {
    const u8 *s;  /* a string's content (after the quote), else the value's first byte */
    size_t n;
    int type;
    int esc;      /* a string holding backslash escapes */
} Span;

typedef struct {
    const u8 *p, *end;
    int nfields;
    const char *names[MAX_FIELDS];
    size_t lens[MAX_FIELDS];
    Span fields[MAX_FIELDS];
} Parser;

static void skip_ws(Parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hexval(u8 c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One UTF-8 sequence starting at p (p[0] >= 0x80): its length, 0 if invalid. */
static size_t utf8_len(const u8 *p, const u8 *end) {
    u8 c = p[0];
    size_t n;
    u8 lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

static int parse_string(Parser *ps, Span *out) {
    const u8 *p = ps->p + 1, *end = ps->end; /* after the opening quote */
    int esc = 0;
    const u8 *start = p;
    while (p < end) {
        /* Plain bytes in blocks (most of an event is string content): no
         * quote, backslash, control or non-ASCII byte. */
#ifdef __SSE2__
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i stop = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                /* signed compare: bytes >= 0x80 are negative, so < 0x20 catches them too */
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
            int mask = _mm_movemask_epi8(stop);
            if (mask) { p += __builtin_ctz((unsigned)mask); break; }
            p += 16;
        }
#endif
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
            uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\'), ctl = v & (ones * 0xE0);
            uint64_t stop = ((q - ones) & ~q) | ((b - ones) & ~b) | ((ctl - ones) & ~ctl) | v;
            if (stop & high) break;
            p += 8;
        }
        if (p >= end) break;
        u8 c = *p;
        if (c == '"') {
            out->s = start; out->n = (size_t)(p - start); out->type = T_STR; out->esc = esc;
            ps->p = p + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            esc = 1;
            if (p + 1 >= end) return -1;
            u8 e = p[1];
            if (e == 'u') {
                uint32_t cp = 0;
                if (p + 6 > end) return -1;
                for (int i = 2; i < 6; i++) {
                    if (hexval(p[i]) < 0) return -1;
                    cp = cp * 16 + (uint32_t)hexval(p[i]);
                }
                p += 6;
                /* A lone surrogate is not JSON text orjson accepts. */
                if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo = 0;
                    if (p + 6 > end || p[0] != '\\' || p[1] != 'u') return -1;
                    for (int i = 2; i < 6; i++) {
                        if (hexval(p[i]) < 0) return -1;
                        lo = lo * 16 + (uint32_t)hexval(p[i]);
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                    p += 6;
                }
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n'
                       || e == 'r' || e == 't') {
                p += 2;
            } else return -1;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(p, end);
            if (!n) return -1;
            p += n;
            continue;
        }
        p++;
    }
    return -1;
}

static int parse_number(Parser *ps) {
    const u8 *p = ps->p, *end = ps->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return -1;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return -1;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    ps->p = p;
    return 0;
}

static int literal(Parser *ps, const char *word, size_t n) {
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return -1;
    ps->p += n;
    return 0;
}

/* Decodes a string's escapes into out (cap bytes at least n): the decoded length. */
static size_t unescape(const u8 *s, size_t n, u8 *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') { out[o++] = s[i++]; continue; }
        u8 e = s[i + 1];
        if (e != 'u') {
            out[o++] = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r'
                     : e == 't' ? '\t' : e;
            i += 2;
            continue;
        }
        uint32_t cp = 0;
        for (int k = 2; k < 6; k++) cp = cp * 16 + (uint32_t)hexval(s[i + k]);
        i += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u') {
            uint32_t lo = 0;
            for (int k = 2; k < 6; k++) lo = lo * 16 + (uint32_t)hexval(s[i + k]);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
        }
        /* Six escaped bytes never decode to more than four. */
        if (cp < 0x80) out[o++] = (u8)cp;
        else if (cp < 0x800) { out[o++] = (u8)(0xC0 | cp >> 6); out[o++] = (u8)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out[o++] = (u8)(0xE0 | cp >> 12); out[o++] = (u8)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (u8)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (u8)(0xF0 | cp >> 18); out[o++] = (u8)(0x80 | ((cp >> 12) & 0x3F));
            out[o++] = (u8)(0x80 | ((cp >> 6) & 0x3F)); out[o++] = (u8)(0x80 | (cp & 0x3F));
        }
    }
    return o;
}

static int parse_value(Parser *ps, int depth, Span *out);

static int key_matches(const Span *key, const char *name, size_t len, u8 *scratch) {
    if (!key->esc) return key->n == len && memcmp(key->s, name, len) == 0;
    if (key->n > 256) return 0;
    size_t n = unescape(key->s, key->n, scratch);
    return n == len && memcmp(scratch, name, len) == 0;
}

static int parse_object(Parser *ps, int depth) {
    u8 scratch[256];
    ps->p++; /* '{' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; return 0; }
    for (;;) {
        Span key, val;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"' || parse_string(ps, &key)) return -1;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return -1;
        ps->p++;
        skip_ws(ps);
        if (parse_value(ps, depth + 1, &val)) return -1;
        if (depth == 0) { /* a member of the top-level object */
            for (int i = 0; i < ps->nfields; i++)
                if (key_matches(&key, ps->names[i], ps->lens[i], scratch)) ps->fields[i] = val;
        }
        skip_ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == '}') { ps->p++; return 0; }
        return -1;
    }
}

static int parse_array(Parser *ps, int depth) {
    ps->p++; /* '[' */
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') { ps->p++; return 0; }
    for (;;) {
        Span val;
        skip_ws(ps);
        if (parse_value(ps, depth + 1, &val)) return -1;
        skip_ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == ']') { ps->p++; return 0; }
        return -1;
    }
}

static int parse_value(Parser *ps, int depth, Span *out) {
    if (depth > MAX_DEPTH || ps->p >= ps->end) return -1;
    const u8 *start = ps->p;
    out->esc = 0;
    int rc;
    switch (*ps->p) {
    case '"': return parse_string(ps, out);
    case '{': out->type = T_OBJ; rc = parse_object(ps, depth); break;
    case '[': out->type = T_ARR; rc = parse_array(ps, depth); break;
    case 't': out->type = T_TRUE; rc = literal(ps, "true", 4); break;
    case 'f': out->type = T_FALSE; rc = literal(ps, "false", 5); break;
    case 'n': out->type = T_NULL; rc = literal(ps, "null", 4); break;
    default: out->type = T_NUM; rc = parse_number(ps); break;
    }
    out->s = start;
    out->n = (size_t)(ps->p - start);
    return rc;
}

/* Reads a whole event with the field names of proto: 0 for an object (ps holds
 * its top-level fields' spans), READ_INVALID for invalid JSON, READ_NOT_OBJECT
 * for valid JSON that is not an object. */
enum { READ_INVALID = -1, READ_NOT_OBJECT = -2 };
static int read_event(const Parser *proto, const u8 *raw, size_t n, Parser *ps) {
    *ps = *proto;
    ps->p = raw;
    ps->end = raw + n;
    for (int i = 0; i < ps->nfields; i++) ps->fields[i].type = T_NONE;
    Span top;
    skip_ws(ps);
    if (parse_value(ps, 0, &top)) return READ_INVALID;
    skip_ws(ps);
    if (ps->p != ps->end) return READ_INVALID;
    return top.type == T_OBJ ? 0 : READ_NOT_OBJECT;
}

/* Compact JSON text of a non-string value: its input bytes without whitespace
 * outside strings (orjson's text for integers, literals and compact input). */
static inline size_t compact(const u8 *s, size_t n, u8 *out) {
    size_t o = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        u8 c = s[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\') out[o++] = s[++i];
            else if (c == '"') in_str = 0;
        } else if (c == '"') { in_str = 1; out[o++] = c; }
        else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') out[o++] = c;
    }
    return o;
}

#endif
