/* ota_port_host.c: ota_platform_t on Linux (libcurl, files). See
 * ota_port_host.h for the device folder's layout. */
#define _POSIX_C_SOURCE 200809L
#include "ota_port_host.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ota_core.h"

#define ANSWER_MAX (64 * 1024)
#define HOST_POWER_CUT_EXIT 3

static const char *state_names[] = {"valid", "new", "pending_verify", "aborted"};

static void path_of(const host_device_t *dev, char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dev->dir, name);
}

/* Writes a whole file under a temporary name, syncs it, then renames it over
 * the old one: a cut leaves the old file or the new one, as NVS does. */
static ota_err_t write_atomically(const char *path, const void *data, size_t len)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return OTA_ERR_FLASH;
    }
    bool ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return OTA_ERR_FLASH;
    }
    return OTA_OK;
}

/* ---- otadata and the simulated bootloader ------------------------------ */

static int state_from(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static ota_err_t save_otadata(host_device_t *dev)
{
    char path[600], text[64];
    path_of(dev, path, sizeof path, "otadata");
    int len = snprintf(text, sizeof text, "boot=%d state=%s\n", dev->boot_slot, state_names[dev->boot_state]);
    return write_atomically(path, text, (size_t)len);
}

static ota_err_t slot_head(const host_device_t *dev, int slot, ota_image_info_t *info)
{
    char path[600], name[16];
    snprintf(name, sizeof name, "slot%d.bin", slot);
    path_of(dev, path, sizeof path, name);
    uint8_t head[OTA_IMAGE_HEAD_LEN];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return OTA_ERR_NOT_FOUND;
    }
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    return ota_image_read_head(head, got, info);
}

ota_err_t host_boot(host_device_t *dev)
{
    char path[600], nvs[600];
    path_of(dev, nvs, sizeof nvs, "nvs");
    if (mkdir(nvs, 0700) != 0 && errno != EEXIST) {
        return OTA_ERR_FLASH;
    }
    dev->boot_slot = 0;
    dev->boot_state = HOST_SLOT_VALID;
    path_of(dev, path, sizeof path, "otadata");
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        char state[32] = "";
        int slot = -1;
        if (fscanf(f, "boot=%d state=%31s", &slot, state) == 2 && (slot == 0 || slot == 1) && state_from(state) >= 0) {
            dev->boot_slot = slot;
            dev->boot_state = (host_slot_state_t)state_from(state);
        }
        fclose(f);
    }
    bool changed = false;
    if (dev->boot_state == HOST_SLOT_NEW) {
        dev->boot_state = HOST_SLOT_PENDING_VERIFY;
        changed = true;
    } else if (dev->boot_state == HOST_SLOT_PENDING_VERIFY) {
        /* It booted once and never confirmed itself: the bootloader
         * marks it aborted and returns to the other slot. */
        dev->boot_slot ^= 1;
        dev->boot_state = HOST_SLOT_VALID;
        changed = true;
        printf("bootloader: rollback to slot %d\n", dev->boot_slot);
    }
    ota_image_info_t info;
    if (slot_head(dev, dev->boot_slot, &info) != OTA_OK) {
        if (slot_head(dev, dev->boot_slot ^ 1, &info) != OTA_OK) {
            fprintf(stderr, "bootloader: no bootable app in %s\n", dev->dir);
            return OTA_ERR_FLASH;
        }
        dev->boot_slot ^= 1;
        dev->boot_state = HOST_SLOT_VALID;
        changed = true;
    }
    if (changed && save_otadata(dev) != OTA_OK) {
        return OTA_ERR_FLASH;
    }
    dev->running_slot = dev->boot_slot;
    dev->running_state = dev->boot_state;
    dev->reboot_requested = false;
    printf("boot slot=%d state=%s version=%s\n", dev->running_slot, state_names[dev->running_state], info.version);
    fflush(stdout);
    return OTA_OK;
}

void host_device_close(host_device_t *dev)
{
    if (dev->download != NULL) {
        curl_easy_cleanup(dev->download);
        dev->download = NULL;
    }
}

/* ---- HTTP -------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
} buffer_t;

static size_t collect(char *data, size_t size, size_t count, void *user)
{
    buffer_t *b = user;
    size_t n = size * count;
    if (b->len + n > ANSWER_MAX) {
        return 0;
    }
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL) {
        return 0;
    }
    b->data = grown;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static struct curl_slist *auth_headers(const char *bearer, bool json)
{
    struct curl_slist *list = NULL, *next;
    if (json) {
        next = curl_slist_append(list, "Content-Type: application/json");
        if (next == NULL) {
            return NULL;
        }
        list = next;
    }
    /* Like esp_http_client: no Accept-Encoding, so nothing is compressed. */
    next = curl_slist_append(list, "Accept-Encoding:");
    if (next == NULL) {
        curl_slist_free_all(list);
        return NULL;
    }
    list = next;
    if (bearer != NULL && bearer[0] != '\0') {
        size_t len = strlen(bearer) + 32;
        char *line = malloc(len);
        if (line == NULL) {
            curl_slist_free_all(list);
            return NULL;
        }
        snprintf(line, len, "Authorization: Bearer %s", bearer);
        next = curl_slist_append(list, line);
        free(line);
        if (next == NULL) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = next;
    }
    return list;
}

static void common_options(CURL *curl, const char *ca_cert_pem)
{
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ESP32 HTTP Client/1.0");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (ca_cert_pem != NULL) {
        struct curl_blob blob = {.data = (void *)ca_cert_pem, .len = strlen(ca_cert_pem), .flags = CURL_BLOB_COPY};
        curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
    }
}

static ota_err_t io_error(CURLcode code)
{
    return code == CURLE_OUT_OF_MEMORY ? OTA_ERR_NO_MEM : OTA_ERR_IO;
}

static ota_err_t host_post_json(void *ctx, const char *url, const char *bearer, const char *ca_cert_pem,
                                const char *body, int *http_status, char **answer)
{
    (void)ctx;
    *answer = NULL;
    *http_status = 0;
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = auth_headers(bearer, true);
    if (curl == NULL || headers == NULL) {
        curl_easy_cleanup(curl);
        curl_slist_free_all(headers);
        return OTA_ERR_NO_MEM;
    }
    buffer_t got = {0};
    common_options(curl, ca_cert_pem);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &got);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (code != CURLE_OK) {
        free(got.data);
        return io_error(code);
    }
    *http_status = (int)status;
    *answer = got.data != NULL ? got.data : calloc(1, 1);
    return *answer != NULL ? OTA_OK : OTA_ERR_NO_MEM;
}

/* ---- download ---------------------------------------------------------- */

typedef struct {
    host_device_t *dev;
    const ota_download_t *d;
    int fd;
    uint64_t offset;          /* next byte of the file to write */
    uint8_t head[OTA_IMAGE_HEAD_LEN];
    size_t head_len;          /* fresh downloads: bytes held until the head is checked */
    bool head_checked;
    ota_err_t verdict;        /* set when the write callback refuses the data */
} sink_t;

static bool write_at(sink_t *s, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = pwrite(s->fd, data, len, (off_t)s->offset);
        if (n <= 0) {
            s->verdict = OTA_ERR_FLASH;
            return false;
        }
        data += n;
        len -= (size_t)n;
        s->offset += (uint64_t)n;
        if (s->dev->power_cut_at != 0 && s->offset >= s->dev->power_cut_at) {
            fsync(s->fd);
            printf("power cut at byte %llu\n", (unsigned long long)s->offset);
            fflush(stdout);
            _exit(HOST_POWER_CUT_EXIT);
        }
    }
    return true;
}

/* Like esp_https_ota: nothing is written before the image's first bytes
 * have been read and approved. */
static size_t sink_write(char *data, size_t size, size_t count, void *user)
{
    sink_t *s = user;
    size_t n = size * count;
    const uint8_t *bytes = (const uint8_t *)data;
    if (s->offset + s->head_len + n > s->d->file_size) {
        s->verdict = OTA_ERR_PROTOCOL;
        return 0;
    }
    if (!s->head_checked) {
        size_t take = sizeof s->head - s->head_len;
        if (take > n) {
            take = n;
        }
        memcpy(s->head + s->head_len, bytes, take);
        s->head_len += take;
        if (s->head_len < sizeof s->head && s->head_len < s->d->file_size) {
            return n;
        }
        ota_image_info_t info;
        ota_err_t err = ota_image_read_head(s->head, s->head_len, &info);
        if (err == OTA_OK) {
            err = s->d->check_image(s->d->user, &info);
        }
        if (err != OTA_OK) {
            s->verdict = err;
            return 0;
        }
        s->head_checked = true;
        size_t held = s->head_len;
        s->head_len = 0;
        if (!write_at(s, s->head, held)) {
            return 0;
        }
        bytes += take;
        n -= take;
        if (!write_at(s, bytes, n)) {
            return 0;
        }
        return size * count;
    }
    return write_at(s, bytes, n) ? n : 0;
}

static ota_err_t http_status_error(long status)
{
    return status == 0 ? OTA_ERR_IO : (status >= 500 || status == 429 ? OTA_ERR_IO : OTA_ERR_HTTP);
}

static void slot_path(const host_device_t *dev, int slot, char *out, size_t cap)
{
    char name[16];
    snprintf(name, sizeof name, "slot%d.bin", slot);
    path_of(dev, out, cap, name);
}

static ota_err_t host_download(void *ctx, const ota_download_t *d, uint64_t *written)
{
    host_device_t *dev = ctx;
    *written = d->resume_from;
    if (dev->download == NULL) {
        dev->download = curl_easy_init();
        if (dev->download == NULL) {
            return OTA_ERR_NO_MEM;
        }
    }
    CURL *curl = dev->download;
    struct curl_slist *headers = auth_headers(d->bearer, false);
    if (headers == NULL) {
        return OTA_ERR_NO_MEM;
    }
    char path[600];
    slot_path(dev, dev->running_slot ^ 1, path, sizeof path);
    /* A fresh download erases the slot first, as esp_ota_begin does. */
    int fd = open(path, O_WRONLY | O_CREAT | (d->resume_from == 0 ? O_TRUNC : 0), 0600);
    if (fd < 0) {
        curl_slist_free_all(headers);
        return OTA_ERR_FLASH;
    }
    sink_t sink = {.dev = dev, .d = d, .fd = fd, .offset = d->resume_from, .head_checked = d->resume_from > 0};

    curl_easy_reset(curl);
    common_options(curl, d->ca_cert_pem);
    curl_easy_setopt(curl, CURLOPT_URL, d->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    ota_err_t err = OTA_OK;
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_off_t length = -1;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (code != CURLE_OK) {
        err = io_error(code);
    } else if (status != 200) {
        fprintf(stderr, "HEAD answered %ld\n", status);
        err = http_status_error(status);
    } else if (length < 0 || (uint64_t)length != d->file_size) {
        fprintf(stderr, "HEAD says %lld bytes, the check answer %llu\n", (long long)length,
                (unsigned long long)d->file_size);
        err = OTA_ERR_PROTOCOL;
    }

    curl_easy_setopt(curl, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    while (err == OTA_OK && sink.offset < d->file_size) {
        uint64_t from = sink.offset;
        uint64_t to = from + d->piece_size - 1;
        if (to >= d->file_size) {
            to = d->file_size - 1;
        }
        char range[64];
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)from, (unsigned long long)to);
        curl_easy_setopt(curl, CURLOPT_RANGE, range);
        code = curl_easy_perform(curl);
        status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (sink.verdict != OTA_OK) {
            err = sink.verdict;
        } else if (code != CURLE_OK) {
            err = io_error(code);
        } else if (status != 206) {
            fprintf(stderr, "GET Range %s answered %ld\n", range, status);
            err = http_status_error(status);
        } else if (sink.offset != to + 1) {
            err = OTA_ERR_IO; /* a short piece: ask again from where it stopped */
        }
        if (sink.offset > *written) {
            *written = sink.offset;
            d->on_written(d->user, sink.offset);
        }
    }
    curl_slist_free_all(headers);
    /* Leave the handle without pointers into this stack frame. */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, NULL);
    if (fsync(fd) != 0 && err == OTA_OK) {
        err = OTA_ERR_FLASH;
    }
    close(fd);
    return err;
}

static ota_err_t host_read_update(void *ctx, uint64_t offset, uint8_t *buf, size_t len)
{
    host_device_t *dev = ctx;
    char path[600];
    slot_path(dev, dev->running_slot ^ 1, path, sizeof path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return OTA_ERR_FLASH;
    }
    ssize_t got = pread(fd, buf, len, (off_t)offset);
    close(fd);
    return got == (ssize_t)len ? OTA_OK : OTA_ERR_FLASH;
}

static ota_err_t host_activate(void *ctx, uint64_t image_size)
{
    host_device_t *dev = ctx;
    ota_image_info_t info;
    if (image_size < OTA_IMAGE_HEAD_LEN || slot_head(dev, dev->running_slot ^ 1, &info) != OTA_OK) {
        return OTA_ERR_IMAGE;
    }
    dev->boot_slot = dev->running_slot ^ 1;
    dev->boot_state = HOST_SLOT_NEW;
    ota_err_t err = save_otadata(dev);
    if (err == OTA_OK && dev->power_cut_after_activation) {
        printf("power cut after activation\n");
        fflush(stdout);
        _exit(HOST_POWER_CUT_EXIT);
    }
    return err;
}

static void host_abort(void *ctx)
{
    (void)ctx; /* the slot's bytes are simply never booted */
}

static uint32_t host_update_slot_id(void *ctx)
{
    const host_device_t *dev = ctx;
    return (uint32_t)(dev->running_slot ^ 1);
}

static uint32_t host_running_slot_id(void *ctx)
{
    const host_device_t *dev = ctx;
    return (uint32_t)dev->running_slot;
}

static ota_err_t host_running_app(void *ctx, ota_app_info_t *out)
{
    host_device_t *dev = ctx;
    ota_image_info_t info;
    ota_err_t err = slot_head(dev, dev->running_slot, &info);
    if (err != OTA_OK) {
        return err;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->version, sizeof out->version, "%s", info.version);
    snprintf(out->project_name, sizeof out->project_name, "%s", info.project_name);
    out->chip_id = info.chip_id;
    out->secure_version = info.secure_version;
    return OTA_OK;
}

static ota_boot_state_t host_boot_state(void *ctx)
{
    host_device_t *dev = ctx;
    return dev->running_state == HOST_SLOT_PENDING_VERIFY ? OTA_BOOT_PENDING_VERIFY : OTA_BOOT_NORMAL;
}

static ota_err_t host_mark_valid(void *ctx)
{
    host_device_t *dev = ctx;
    dev->running_state = HOST_SLOT_VALID;
    dev->boot_slot = dev->running_slot;
    dev->boot_state = HOST_SLOT_VALID;
    printf("confirmed slot=%d\n", dev->running_slot);
    return save_otadata(dev);
}

static ota_err_t host_rollback_and_reboot(void *ctx)
{
    host_device_t *dev = ctx;
    dev->boot_slot = dev->running_slot ^ 1;
    dev->boot_state = HOST_SLOT_VALID;
    dev->reboot_requested = true;
    printf("rollback requested: next boot from slot %d\n", dev->boot_slot);
    return save_otadata(dev);
}

static void host_reboot(void *ctx)
{
    host_device_t *dev = ctx;
    dev->reboot_requested = true;
}

/* ---- NVS --------------------------------------------------------------- */

static void key_path(const host_device_t *dev, const char *key, char *out, size_t cap)
{
    snprintf(out, cap, "%s/nvs/%s", dev->dir, key);
}

static ota_err_t host_kv_get(void *ctx, const char *key, void *buf, size_t *len)
{
    char path[600];
    key_path(ctx, key, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return errno == ENOENT ? OTA_ERR_NOT_FOUND : OTA_ERR_FLASH;
    }
    size_t got = fread(buf, 1, *len, f);
    bool longer = fgetc(f) != EOF;
    fclose(f);
    *len = got;
    return longer ? OTA_ERR_ARG : OTA_OK;
}

static ota_err_t host_kv_set(void *ctx, const char *key, const void *buf, size_t len)
{
    char path[600];
    key_path(ctx, key, path, sizeof path);
    return write_atomically(path, buf, len);
}

static ota_err_t host_kv_erase(void *ctx, const char *key)
{
    char path[600];
    key_path(ctx, key, path, sizeof path);
    if (unlink(path) != 0) {
        return errno == ENOENT ? OTA_ERR_NOT_FOUND : OTA_ERR_FLASH;
    }
    return OTA_OK;
}

/* ---- time, chance, log ------------------------------------------------- */

static uint64_t host_now_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void host_sleep_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint32_t host_random32(void *ctx)
{
    (void)ctx;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
        r = (uint32_t)time(NULL);
    }
    return r;
}

static void host_log(void *ctx, int level, const char *message)
{
    host_device_t *dev = ctx;
    static const char *names[] = {"E", "W", "I", "D"};
    if (dev->quiet && level > 1) {
        return;
    }
    fprintf(stderr, "%s ota_client: %s\n", names[level < 0 || level > 3 ? 3 : level], message);
}

const ota_platform_t host_platform = {
    .http_post_json = host_post_json,
    .download = host_download,
    .read_update = host_read_update,
    .activate_update = host_activate,
    .abort_update = host_abort,
    .update_slot_id = host_update_slot_id,
    .running_slot_id = host_running_slot_id,
    .running_app = host_running_app,
    .boot_state = host_boot_state,
    .mark_valid = host_mark_valid,
    .rollback_and_reboot = host_rollback_and_reboot,
    .reboot = host_reboot,
    .kv_get = host_kv_get,
    .kv_set = host_kv_set,
    .kv_erase = host_kv_erase,
    .now_ms = host_now_ms,
    .sleep_ms = host_sleep_ms,
    .random32 = host_random32,
    .log = host_log,
};
