/* ota_version.c: version ordering, the same reading the server uses
 * (ota-core's version.rs): SemVer 2.0 with a leading "v" allowed, "1" and
 * "1.2" meaning 1.0.0 and 1.2.0, and ESP-IDF's `git describe` versions
 * (v1.2.3-4-gabc) read as 1.2.4-dev.4, after 1.2.3 and before 1.2.4. */
#include "ota_core.h"

#include <ctype.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    uint64_t core[3];
    char pre[OTA_VERSION_MAX + 8]; /* "" when there is none */
} version_t;

static bool read_number(const char **p, uint64_t *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && isdigit((unsigned char)s[1]))) {
        return false;
    }
    uint64_t n = 0;
    while (isdigit((unsigned char)*s)) {
        unsigned digit = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - digit) / 10) {
            return false;
        }
        n = n * 10 + digit;
        s++;
    }
    *p = s;
    *out = n;
    return true;
}

/* "N-gHEX" or "N-gHEX-dirty": what git describe appends to a tag. */
static bool read_git_describe(const char *pre, uint64_t *commits)
{
    const char *s = pre;
    if (!read_number(&s, commits) || strncmp(s, "-g", 2) != 0) {
        return false;
    }
    s += 2;
    const char *hex = s;
    while (isxdigit((unsigned char)*s)) {
        s++;
    }
    if (s - hex < 4) {
        return false;
    }
    return *s == '\0' || strcmp(s, "-dirty") == 0;
}

static bool parse(const char *text, version_t *v)
{
    memset(v, 0, sizeof *v);
    if (text == NULL) {
        return false;
    }
    const char *s = text;
    if (*s == 'v' || *s == 'V') {
        s++;
    }
    int parts = 0;
    while (parts < 3) {
        if (!read_number(&s, &v->core[parts])) {
            return false;
        }
        parts++;
        if (*s != '.') {
            break;
        }
        s++;
    }
    if (*s != '\0' && *s != '-' && *s != '+') {
        return false;
    }
    if (*s == '-') {
        s++;
        const char *end = strchr(s, '+');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len == 0 || len >= OTA_VERSION_MAX) {
            return false;
        }
        memcpy(v->pre, s, len);
        v->pre[len] = '\0';
        for (size_t i = 0; i < len; i++) {
            char c = v->pre[i];
            if (!(isalnum((unsigned char)c) || c == '-' || c == '.')) {
                return false;
            }
        }
        uint64_t commits;
        if (parts == 3 && read_git_describe(v->pre, &commits)) {
            if (v->core[2] == UINT64_MAX) {
                return false;
            }
            v->core[2]++;
            snprintf(v->pre, sizeof v->pre, "dev.%llu", (unsigned long long)commits);
        }
    }
    return true;
}

static bool all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return len > 0;
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
        bool na = all_digits(a, la), nb = all_digits(b, lb);
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
