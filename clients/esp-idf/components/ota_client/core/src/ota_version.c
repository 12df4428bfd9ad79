/* ota_version.c: version ordering, the same reading the server uses
 * (crates/ota-core/src/version.rs; both are checked against the shared
 * vectors in clients/esp-idf/host/tests/version_vectors.txt):
 *   - SemVer 2.0, with a leading "v" dropped;
 *   - "1" and "1.2" are 1.0.0 and 1.2.0;
 *   - `git describe` output TAG-N-gHASH[-dirty] is N commits after TAG:
 *     v1.2.3-4-gabc1234 is 1.2.4-dev.4, and v2.0.0-rc.1-3-gabc1234 is
 *     2.0.0-rc.1.dev.3;
 *   - a "-dirty" suffix is build metadata: v1.2.3-dirty is 1.2.3.
 * Build metadata never orders. */
#include "ota_core.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERSION_TEXT_MAX 64
#define PRE_MAX 96

typedef struct {
    uint64_t core[3];
    char pre[PRE_MAX]; /* "" when there is none */
} version_t;

static bool is_digits(const char *s, size_t len)
{
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* A SemVer numeric part: digits, no leading zero, fits in 64 bits. */
static bool read_number(const char *s, size_t len, uint64_t *out)
{
    if (!is_digits(s, len) || (len > 1 && s[0] == '0')) {
        return false;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned digit = (unsigned)(s[i] - '0');
        if (n > (UINT64_MAX - digit) / 10) {
            return false;
        }
        n = n * 10 + digit;
    }
    *out = n;
    return true;
}

/* Dot-separated identifiers of [0-9A-Za-z-], none empty; numeric ones
 * without leading zeros when `numeric_rule` (pre-releases, not builds). */
static bool identifiers_ok(const char *s, size_t len, bool numeric_rule)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (!isalnum((unsigned char)s[i]) && s[i] != '-') {
                return false;
            }
            continue;
        }
        size_t n = i - start;
        if (n == 0) {
            return false;
        }
        if (numeric_rule && is_digits(s + start, n) && n > 1 && s[start] == '0') {
            return false;
        }
        start = i + 1;
    }
    return true;
}

/* Strict SemVer 2.0: MAJOR.MINOR.PATCH[-pre][+build]. */
static bool parse_semver(const char *s, size_t len, version_t *v)
{
    memset(v, 0, sizeof *v);
    const char *end = s + len;
    const char *plus = memchr(s, '+', len);
    if (plus != NULL) {
        if (!identifiers_ok(plus + 1, (size_t)(end - plus - 1), false)) {
            return false;
        }
        end = plus;
    }
    const char *dash = memchr(s, '-', (size_t)(end - s));
    const char *core_end = dash != NULL ? dash : end;
    if (dash != NULL) {
        size_t pre_len = (size_t)(end - dash - 1);
        if (pre_len >= PRE_MAX || !identifiers_ok(dash + 1, pre_len, true)) {
            return false;
        }
        memcpy(v->pre, dash + 1, pre_len);
        v->pre[pre_len] = '\0';
    }
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        const char *stop = i < 2 ? memchr(p, '.', (size_t)(core_end - p)) : core_end;
        if (stop == NULL || !read_number(p, (size_t)(stop - p), &v->core[i])) {
            return false;
        }
        p = stop + 1;
    }
    return p == core_end + 1;
}

/* "1" or "1.2": digits without leading zeros, at most 9 per part. */
static bool is_short_numeric(const char *s, size_t len, int *parts)
{
    *parts = 1;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > 9 || !is_digits(s + start, n) || (n > 1 && s[start] == '0')) {
            return false;
        }
        if (i < len) {
            (*parts)++;
        }
        start = i + 1;
    }
    return true;
}

/* SemVer after padding "1" and "1.2" to three parts. */
static bool parse_padded(const char *s, size_t len, version_t *v)
{
    int parts;
    if (is_short_numeric(s, len, &parts) && parts < 3) {
        char padded[VERSION_TEXT_MAX + 8];
        int n = snprintf(padded, sizeof padded, "%.*s%s", (int)len, s, parts == 1 ? ".0.0" : ".0");
        return n > 0 && (size_t)n < sizeof padded && parse_semver(padded, (size_t)n, v);
    }
    return parse_semver(s, len, v);
}

static const char *find_last(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = len; i >= n; i--) {
        if (memcmp(s + i - n, needle, n) == 0) {
            return s + i - n;
        }
    }
    return NULL;
}

/* TAG-N-gHASH[-dirty]: 1 when read into *v, 0 when not of that form,
 * -1 when of that form but TAG is not a version. */
static int parse_git_describe(const char *s, size_t len, version_t *v)
{
    if (len >= 6 && memcmp(s + len - 6, "-dirty", 6) == 0) {
        len -= 6;
    }
    const char *g = find_last(s, len, "-g");
    if (g == NULL) {
        return 0;
    }
    size_t hash_len = (size_t)(s + len - (g + 2));
    for (size_t i = 0; i < hash_len; i++) {
        if (!isxdigit((unsigned char)g[2 + i])) {
            return 0;
        }
    }
    if (hash_len < 4 || hash_len > 40) {
        return 0;
    }
    const char *dash = find_last(s, (size_t)(g - s), "-");
    if (dash == NULL) {
        return 0;
    }
    size_t commits_len = (size_t)(g - dash - 1);
    if (commits_len == 0 || commits_len > 9 || !is_digits(dash + 1, commits_len) || dash[1] == '0') {
        return 0;
    }
    const char *tag = s;
    size_t tag_len = (size_t)(dash - s);
    if (memchr(tag, '+', tag_len) != NULL) {
        return 0;
    }
    if (tag_len > 0 && tag[0] == 'v') {
        tag++;
        tag_len--;
    }
    if (!parse_padded(tag, tag_len, v)) {
        return -1;
    }
    char pre[PRE_MAX];
    int n;
    if (v->pre[0] == '\0') {
        if (v->core[2] == UINT64_MAX) {
            return -1;
        }
        v->core[2]++;
        n = snprintf(pre, sizeof pre, "dev.%.*s", (int)commits_len, dash + 1);
    } else {
        n = snprintf(pre, sizeof pre, "%s.dev.%.*s", v->pre, (int)commits_len, dash + 1);
    }
    if (n < 0 || (size_t)n >= sizeof pre) {
        return -1;
    }
    memcpy(v->pre, pre, (size_t)n + 1);
    return 1;
}

static bool parse(const char *text, version_t *v)
{
    if (text == NULL) {
        return false;
    }
    size_t len = strlen(text);
    if (len > VERSION_TEXT_MAX) {
        return false;
    }
    if (text[0] == 'v') {
        text++;
        len--;
    }
    int described = parse_git_describe(text, len, v);
    if (described != 0) {
        return described > 0;
    }
    if (len >= 6 && memcmp(text + len - 6, "-dirty", 6) == 0 && memchr(text, '+', len - 6) == NULL) {
        return parse_semver(text, len - 6, v);
    }
    return parse_padded(text, len, v);
}

/* SemVer 2.0 §11: identifiers compared one by one, numbers numerically and
 * below words; a shorter list that is a prefix comes first. */
static int compare_pre(const char *a, const char *b)
{
    if (*a == '\0' || *b == '\0') {
        return (*a == '\0') - (*b == '\0');
    }
    while (true) {
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        bool na = is_digits(a, la), nb = is_digits(b, lb);
        int c;
        if (na && nb) {
            c = la != lb ? (la < lb ? -1 : 1) : strncmp(a, b, la);
        } else if (na != nb) {
            c = na ? -1 : 1;
        } else {
            c = strncmp(a, b, la < lb ? la : lb);
            if (c == 0 && la != lb) {
                c = la < lb ? -1 : 1;
            }
        }
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        a += la;
        b += lb;
        if (*a == '\0' || *b == '\0') {
            return (*a != '\0') - (*b != '\0');
        }
        a++;
        b++;
    }
}

int ota_version_compare(const char *a, const char *b, bool *ok)
{
    version_t va, vb;
    *ok = parse(a, &va) && parse(b, &vb);
    if (!*ok) {
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (va.core[i] != vb.core[i]) {
            return va.core[i] < vb.core[i] ? -1 : 1;
        }
    }
    return compare_pre(va.pre, vb.pre);
}
