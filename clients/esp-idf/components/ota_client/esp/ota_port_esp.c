/*
 * ota_port_esp.c: the ESP-IDF platform under the portable OTA core
 * (ota_port.h): esp_http_client for the JSON calls, esp_https_ota for the
 * image, esp_ota_ops for the slots and the rollback verdict, NVS for the
 * resume record.
 *
 * Written against ESP-IDF v5.5 (esp_https_ota resumption, ota_image_bytes_written)
 * and not compiled with an ESP-IDF toolchain here; see the README of
 * examples/scales_bridge_tab5 for what was checked and how.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_app_desc.h"
#include "esp_err.h"
#include "esp_http_client.h"
#include "esp_https_ota.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "nvs.h"
#include "sdkconfig.h"
#if CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
#include "esp_crt_bundle.h"
#endif

#include "ota_port.h"

#define TAG "ota_client"
#define NVS_NAMESPACE "ota_client"
#define ANSWER_CAP (32 * 1024) /* a check answer with long release notes */

/* esp_https_ota reads IMAGE_HEADER_SIZE (1024) bytes before it writes the
 * first byte, and resumes only when at least DEFAULT_OTA_BUF_SIZE (the same
 * 1024) are in flash; below that it starts over from byte 0 by itself. */
#define IDF_MIN_RESUME_BYTES 1024u

#if ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 5, 0)
#define PORT_CAN_RESUME 1
#else
#define PORT_CAN_RESUME 0
#endif

/* ESP-IDF v5.5 always has partial (Range) downloads. Its master branch
 * (esp_https_ota.c dated 2017-2026) compiles them only with
 * CONFIG_ESP_HTTPS_OTA_ENABLE_PARTIAL_DOWNLOAD (default n); without them a
 * resumed download is one GET with "Range: bytes=N-", which the server also
 * answers. Which release the Kconfig option first ships in is a guess. */
#if defined(CONFIG_ESP_HTTPS_OTA_ENABLE_PARTIAL_DOWNLOAD) || ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(6, 0, 0)
#define PORT_PARTIAL_DOWNLOAD 1
#else
#define PORT_PARTIAL_DOWNLOAD 0
#warning "ota_client: set CONFIG_ESP_HTTPS_OTA_ENABLE_PARTIAL_DOWNLOAD=y to download in Range pieces"
#endif

#ifndef CONFIG_OTA_CLIENT_HTTP_TIMEOUT_MS
#define CONFIG_OTA_CLIENT_HTTP_TIMEOUT_MS 30000
#endif

typedef struct {
    /* Open from a finished download until activate_update or abort_update:
     * esp_https_ota_finish() is what validates the image and switches the
     * boot partition. */
    esp_https_ota_handle_t handle;
    /* Every byte was in the slot already (the record said so): nothing was
     * downloaded, activate_update sets the boot partition directly. */
    bool slot_complete;
    const char *bearer;   /* read by the client-init callback during one download */
    int last_http_status; /* status of the last answer seen during one download */
} esp_port_t;

static esp_port_t s_port;

/* ---- helpers ----------------------------------------------------------- */

static void copy_text(char *dst, size_t dst_len, const char *src, size_t src_len)
{
    size_t n = 0;
    while (n < src_len && n + 1 < dst_len && src[n] != '\0') {
        n++;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void set_trust(esp_http_client_config_t *http, const char *ca_cert_pem)
{
    if (ca_cert_pem != NULL) {
        http->cert_pem = ca_cert_pem;
        return;
    }
#if CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
    http->crt_bundle_attach = esp_crt_bundle_attach;
#endif
    /* Neither: only plain http:// works (and for downloads only with
     * CONFIG_ESP_HTTPS_OTA_ALLOW_HTTP). */
}

static esp_err_t set_bearer(esp_http_client_handle_t client, const char *bearer)
{
    if (bearer == NULL || bearer[0] == '\0') {
        return ESP_OK;
    }
    size_t size = strlen("Bearer ") + strlen(bearer) + 1;
    char *value = malloc(size);
    if (value == NULL) {
        return ESP_ERR_NO_MEM;
    }
    snprintf(value, size, "Bearer %s", bearer);
    esp_err_t err = esp_http_client_set_header(client, "Authorization", value); /* copies value */
    free(value);
    return err;
}

/* 408, 425, 429 and 5xx are worth retrying later, like a cut connection. */
static bool retryable_status(int status)
{
    return status == 408 || status == 425 || status == 429 || status >= 500;
}

static const esp_partition_t *update_slot(void)
{
    /* The slot esp_https_ota_begin() writes when config.partition.staging is
     * NULL: esp_ota_get_next_update_partition(NULL). */
    return esp_ota_get_next_update_partition(NULL);
}

/* ---- JSON calls -------------------------------------------------------- */

static ota_err_t http_post_json(void *ctx, const char *url, const char *bearer, const char *ca_cert_pem,
                                const char *body, int *http_status, char **answer)
{
    (void)ctx;
    *http_status = 0;
    *answer = NULL;
    size_t body_len = strlen(body);
    if (body_len > INT_MAX) {
        return OTA_ERR_ARG;
    }
    esp_http_client_config_t http = {
        .url = url,
        .method = HTTP_METHOD_POST,
        .timeout_ms = CONFIG_OTA_CLIENT_HTTP_TIMEOUT_MS,
        .buffer_size_tx = 2048, /* request line and a JWT in one buffer */
        .disable_auto_redirect = true,
    };
    set_trust(&http, ca_cert_pem);
    esp_http_client_handle_t client = esp_http_client_init(&http);
    if (client == NULL) {
        ESP_LOGE(TAG, "cannot set up an HTTP client for %s", url);
        return OTA_ERR_ARG;
    }
    ota_err_t result = OTA_ERR_IO;
    char *buf = NULL;
    if (esp_http_client_set_header(client, "Content-Type", "application/json") != ESP_OK ||
        esp_http_client_set_header(client, "Accept", "application/json") != ESP_OK ||
        set_bearer(client, bearer) != ESP_OK) {
        result = OTA_ERR_NO_MEM;
        goto out;
    }
    esp_err_t err = esp_http_client_open(client, (int)body_len);
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "POST %s: cannot connect (%s)", url, esp_err_to_name(err));
        goto out;
    }
    for (size_t sent = 0; sent < body_len;) {
        int n = esp_http_client_write(client, body + sent, (int)(body_len - sent));
        if (n <= 0) {
            ESP_LOGW(TAG, "POST %s: cut while sending", url);
            goto out;
        }
        sent += (size_t)n;
    }
    int64_t content_length = esp_http_client_fetch_headers(client);
    if (content_length < 0) {
        ESP_LOGW(TAG, "POST %s: no answer (%" PRId64 ")", url, content_length);
        goto out;
    }
    *http_status = esp_http_client_get_status_code(client);

    buf = malloc(ANSWER_CAP + 1);
    if (buf == NULL) {
        result = OTA_ERR_NO_MEM;
        goto out;
    }
    size_t len = 0;
    for (;;) {
        int n = esp_http_client_read(client, buf + len, (int)(ANSWER_CAP - len));
        if (n < 0) {
            ESP_LOGW(TAG, "POST %s: cut while reading the answer (%d)", url, n);
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
        if (len == ANSWER_CAP) {
            break;
        }
    }
    buf[len] = '\0';
    /* fetch_headers() gives 0 for a chunked answer or one without
     * Content-Length: then the end of the stream is the end of the answer
     * (and a cut one fails to parse). */
    bool complete = content_length == 0 || esp_http_client_is_complete_data_received(client);
    if (!complete && len < ANSWER_CAP) {
        ESP_LOGW(TAG, "POST %s: the connection closed before the whole answer", url);
        goto out;
    }
    if (!complete && *http_status >= 200 && *http_status < 300) {
        /* A successful answer must be whole to be parsed; an error's body
         * is only logged, so a truncated one will do. */
        ESP_LOGE(TAG, "POST %s: the answer is over %d bytes", url, ANSWER_CAP);
        result = OTA_ERR_PROTOCOL;
        goto out;
    }
    *answer = buf;
    buf = NULL;
    result = OTA_OK;
out:
    free(buf);
    esp_http_client_close(client);
    esp_http_client_cleanup(client);
    return result;
}

/* ---- the download ------------------------------------------------------ */

/* http_client_init_cb_t has no user pointer: the port comes back through
 * the client's user_data (esp_http_client_config_t.user_data). It runs once,
 * right after esp_http_client_init() in esp_https_ota_begin(), before the
 * HEAD; the header stays on the client for every Range request. */
static esp_err_t on_client_init(esp_http_client_handle_t client)
{
    void *user = NULL;
    if (esp_http_client_get_user_data(client, &user) != ESP_OK || user == NULL) {
        return ESP_ERR_INVALID_STATE;
    }
    esp_port_t *port = user;
    return set_bearer(client, port->bearer);
}

/* The status code is parsed in http_on_headers_complete(), after the
 * ON_HEADER events, so it is read when the body arrives or the exchange
 * ends. DISCONNECTED also follows a refused request: esp_https_ota_begin()
 * closes the client before it returns its error. */
static esp_err_t on_http_event(esp_http_client_event_t *evt)
{
    esp_port_t *port = evt->user_data;
    if (port == NULL) {
        return ESP_OK;
    }
    if (evt->event_id == HTTP_EVENT_ON_DATA || evt->event_id == HTTP_EVENT_ON_FINISH ||
        evt->event_id == HTTP_EVENT_DISCONNECTED) {
        int status = esp_http_client_get_status_code(evt->client);
        if (status > 0) {
            port->last_http_status = status;
        }
    }
    return ESP_OK;
}

/* An esp_https_ota error as the core's error. */
static ota_err_t classify(const esp_port_t *port, esp_err_t err)
{
    switch (err) {
    case ESP_ERR_NO_MEM:
        return OTA_ERR_NO_MEM;
    case ESP_ERR_INVALID_ARG:
        return OTA_ERR_ARG; /* e.g. https without a certificate or bundle */
    case ESP_ERR_INVALID_VERSION:     /* chip id or chip revision of the image */
    case ESP_ERR_OTA_VALIDATE_FAILED: /* not an app image (magic byte) */
        return OTA_ERR_IMAGE;
    case ESP_ERR_OTA_ROLLBACK_INVALID_STATE:
        return OTA_ERR_STATE;
    case ESP_ERR_OTA_PARTITION_CONFLICT:
    case ESP_ERR_OTA_SELECT_INFO_INVALID:
    case ESP_ERR_INVALID_SIZE:
    case ESP_ERR_NOT_FOUND:
        return OTA_ERR_FLASH;
    default:
        break;
    }
    if (err >= ESP_ERR_FLASH_BASE && err < ESP_ERR_FLASH_BASE + 0x100) {
        return OTA_ERR_FLASH;
    }
    int status = port->last_http_status;
    if (status >= 400 && !retryable_status(status)) {
        return OTA_ERR_HTTP;
    }
    return OTA_ERR_IO;
}

static void report_written(const ota_download_t *d, esp_https_ota_handle_t handle, uint64_t *written)
{
    /* binary_file_len: the image's bytes handed to esp_ota_write() so far,
     * counted from 0 of the image, not from where this attempt resumed. */
    int n = esp_https_ota_get_image_len_read(handle);
    if (n >= 0 && (uint64_t)n != *written) {
        *written = (uint64_t)n;
        d->on_written(d->user, *written);
    }
}

static ota_err_t check_descriptor(const ota_download_t *d, esp_https_ota_handle_t handle)
{
    esp_app_desc_t desc;
    esp_err_t err = esp_https_ota_get_img_desc(handle, &desc);
    if (err != ESP_OK) {
        /* ESP_FAIL: the 1024 header bytes did not arrive, or the descriptor
         * magic is wrong; esp_https_ota does not tell which. */
        ESP_LOGW(TAG, "cannot read the image descriptor (%s)", esp_err_to_name(err));
        return err == ESP_ERR_NO_MEM ? OTA_ERR_NO_MEM : OTA_ERR_IO;
    }
    if (desc.magic_word != ESP_APP_DESC_MAGIC_WORD) {
        return OTA_ERR_IMAGE;
    }
    ota_image_info_t info = {
        /* esp_https_ota_perform() compares the image header's chip id with
         * CONFIG_IDF_FIRMWARE_CHIP_ID itself, in the ESP_HTTPS_OTA_BEGIN case,
         * after reading the first 1024 bytes and before its first
         * _ota_write(): esp_ota_verify_chip_id() in v5.3/v5.4 (returns
         * ESP_ERR_INVALID_VERSION), esp_https_ota_verify_image() ->
         * esp_ota_check_image_validity() in newer sources, which also check
         * the chip revision range. esp_https_ota_get_img_desc() hands out
         * only the esp_app_desc_t, so the revisions stay "not set" here. */
        .chip_id = (uint16_t)CONFIG_IDF_FIRMWARE_CHIP_ID,
        .min_chip_rev = 0,
        .max_chip_rev = 0,
        .chip_checked_by_platform = true,
        .secure_version = desc.secure_version,
    };
    copy_text(info.version, sizeof info.version, desc.version, sizeof desc.version);
    copy_text(info.project_name, sizeof info.project_name, desc.project_name, sizeof desc.project_name);
    return d->check_image(d->user, &info);
}

static void close_handle(esp_port_t *port)
{
    if (port->handle != NULL) {
        esp_https_ota_abort(port->handle);
        port->handle = NULL;
    }
    port->slot_complete = false;
}

static ota_err_t download(void *ctx, const ota_download_t *d, uint64_t *written)
{
    esp_port_t *port = ctx;
    *written = d->resume_from;
    close_handle(port);
    if (d->url == NULL || d->file_size == 0 || d->file_size > INT_MAX || d->resume_from > d->file_size) {
        return OTA_ERR_ARG;
    }
    const esp_partition_t *slot = update_slot();
    if (slot == NULL) {
        ESP_LOGE(TAG, "no OTA slot to write (partition table without ota_0/ota_1?)");
        return OTA_ERR_FLASH;
    }
    if (d->file_size > slot->size) {
        ESP_LOGE(TAG, "the image (%" PRIu64 " bytes) is larger than the OTA slot (%" PRIu32 ")", d->file_size,
                 slot->size);
        return OTA_ERR_IMAGE;
    }
    if (d->resume_from == d->file_size) {
        /* Cut after the last byte and before activation: nothing to fetch
         * (a Range starting at the end would be answered 416). The core
         * checks the SHA-256 of the slot next. */
        port->slot_complete = true;
        d->on_written(d->user, d->file_size);
        *written = d->file_size;
        return OTA_OK;
    }

    uint64_t resume = d->resume_from;
#if PORT_CAN_RESUME
    if (resume > 0 && resume < IDF_MIN_RESUME_BYTES) {
        resume = 0;
    }
#else
    if (resume > 0) {
        ESP_LOGW(TAG, "ESP-IDF before v5.5 cannot resume a download: starting again at byte 0, not %" PRIu64,
                 resume);
        resume = 0;
    }
#endif

    port->bearer = d->bearer;
    port->last_http_status = 0;
    esp_http_client_config_t http = {
        .url = d->url,
        .timeout_ms = CONFIG_OTA_CLIENT_HTTP_TIMEOUT_MS,
        .keep_alive_enable = true,
        .buffer_size = 4096,
        .buffer_size_tx = 2048,
        /* A 401 is the server refusing the token: no basic/digest retries. */
        .max_authorization_retries = -1,
        .event_handler = on_http_event,
        .user_data = port,
    };
    set_trust(&http, d->ca_cert_pem);
    esp_https_ota_config_t config = {
        .http_config = &http,
        .http_client_init_cb = on_client_init,
#if PORT_PARTIAL_DOWNLOAD
        .partial_http_download = true,
        .max_http_request_size = d->piece_size == 0 || d->piece_size > INT_MAX ? 0 : (int)d->piece_size,
#endif
#if PORT_CAN_RESUME
        /* Only when there is something to resume: with it set on a fresh
         * download a non-partial GET would carry "Range: bytes=0-". */
        .ota_resumption = resume > 0,
        .ota_image_bytes_written = (size_t)resume,
#endif
    };

    esp_https_ota_handle_t handle = NULL;
    esp_err_t err = esp_https_ota_begin(&config, &handle);
    if (err != ESP_OK || handle == NULL) {
        ota_err_t result = classify(port, err == ESP_OK ? ESP_FAIL : err);
        ESP_LOGW(TAG, "download did not start: %s (HTTP %d)", esp_err_to_name(err), port->last_http_status);
        port->bearer = NULL;
        return result;
    }

#if PORT_PARTIAL_DOWNLOAD
    /* With partial downloads image_length comes from the HEAD: the whole file. */
    int image_size = esp_https_ota_get_image_size(handle);
    if (image_size > 0 && (uint64_t)image_size != d->file_size) {
        ESP_LOGE(TAG, "the server sends %d bytes, the check answer said %" PRIu64, image_size, d->file_size);
        esp_https_ota_abort(handle);
        port->bearer = NULL;
        return OTA_ERR_PROTOCOL;
    }
#endif

    /* Right after begin, esp_https_ota_get_image_len_read() is -1 in state
     * ESP_HTTPS_OTA_BEGIN (a fresh start) and the resume offset in
     * ESP_HTTPS_OTA_RESUME (declared after IN_PROGRESS). esp_https_ota starts
     * over by itself when the server answers the resumed Range with 416, so
     * a requested resume may come back as a fresh start: then the image is
     * checked like any fresh one. */
    int position = esp_https_ota_get_image_len_read(handle);
    bool fresh = resume == 0 || position <= 0;
    if (resume > 0 && fresh) {
        ESP_LOGW(TAG, "esp_https_ota restarted the download at byte 0 instead of %" PRIu64, resume);
    }
    uint64_t reported = fresh ? 0 : resume;
    *written = reported;
    if (fresh) {
        /* Before the first esp_https_ota_perform(): nothing is written yet.
         * The bytes read here are written by that first perform. */
        ota_err_t verdict = check_descriptor(d, handle);
        if (verdict != OTA_OK) {
            esp_https_ota_abort(handle);
            port->bearer = NULL;
            return verdict;
        }
    }

    do {
        err = esp_https_ota_perform(handle);
        report_written(d, handle, &reported);
        *written = reported;
    } while (err == ESP_ERR_HTTPS_OTA_IN_PROGRESS);

    port->bearer = NULL;
    if (err != ESP_OK) {
        ota_err_t result = classify(port, err);
        ESP_LOGW(TAG, "download stopped at byte %" PRIu64 ": %s (HTTP %d)", reported, esp_err_to_name(err),
                 port->last_http_status);
        /* Frees the handle and esp_ota_abort()s the write: the bytes stay in
         * the slot (nothing is erased), so a later attempt can resume. */
        esp_https_ota_abort(handle);
        return result;
    }
    if (!esp_https_ota_is_complete_data_received(handle) || reported != d->file_size) {
        ESP_LOGW(TAG, "download ended at byte %" PRIu64 " of %" PRIu64, reported, d->file_size);
        esp_https_ota_abort(handle);
        return reported > d->file_size ? OTA_ERR_PROTOCOL : OTA_ERR_IO;
    }
    port->handle = handle;
    return OTA_OK;
}

static ota_err_t read_update(void *ctx, uint64_t offset, uint8_t *buf, size_t len)
{
    (void)ctx;
    const esp_partition_t *slot = update_slot();
    if (slot == NULL) {
        return OTA_ERR_FLASH;
    }
    if (offset > slot->size || len > slot->size - offset) {
        return OTA_ERR_ARG;
    }
    /* Decrypts when the slot is encrypted (flash encryption). With flash
     * encryption esp_ota_write() keeps up to 15 trailing bytes in RAM until
     * esp_https_ota_finish(); app images are a multiple of 16 bytes long. */
    esp_err_t err = esp_partition_read(slot, (size_t)offset, buf, len);
    return err == ESP_OK ? OTA_OK : OTA_ERR_FLASH;
}

static ota_err_t activate_update(void *ctx, uint64_t image_size)
{
    esp_port_t *port = ctx;
    esp_err_t err;
    if (port->handle != NULL) {
        /* esp_ota_end() (esp_image_verify of the slot: checksum, hash, and
         * the signature under Secure Boot), then esp_ota_set_boot_partition().
         * The handle is freed whatever the result. */
        err = esp_https_ota_finish(port->handle);
        port->handle = NULL;
    } else if (port->slot_complete) {
        /* Verifies the image the same way before writing otadata. */
        err = esp_ota_set_boot_partition(update_slot());
    } else {
        ESP_LOGE(TAG, "activate: no finished download of %" PRIu64 " bytes", image_size);
        return OTA_ERR_STATE;
    }
    port->slot_complete = false;
    if (err == ESP_OK) {
        return OTA_OK;
    }
    ESP_LOGE(TAG, "activate: %s", esp_err_to_name(err));
    if (err == ESP_ERR_OTA_VALIDATE_FAILED || err == ESP_ERR_OTA_SMALL_SEC_VER) {
        /* ESP_ERR_OTA_SMALL_SEC_VER: anti-rollback erased the slot. */
        return OTA_ERR_IMAGE;
    }
    return OTA_ERR_FLASH;
}

static void abort_update(void *ctx)
{
    close_handle(ctx);
}

/* ---- the running app --------------------------------------------------- */

static uint32_t update_slot_id(void *ctx)
{
    (void)ctx;
    const esp_partition_t *slot = update_slot();
    return slot != NULL ? slot->address : 0;
}

static uint32_t running_slot_id(void *ctx)
{
    (void)ctx;
    const esp_partition_t *running = esp_ota_get_running_partition();
    return running != NULL ? running->address : 0;
}

static ota_err_t running_app(void *ctx, ota_app_info_t *out)
{
    (void)ctx;
    const esp_app_desc_t *desc = esp_app_get_description();
    memset(out, 0, sizeof *out);
    copy_text(out->version, sizeof out->version, desc->version, sizeof desc->version);
    copy_text(out->project_name, sizeof out->project_name, desc->project_name, sizeof desc->project_name);
    out->secure_version = desc->secure_version;
    out->chip_id = (uint16_t)CONFIG_IDF_FIRMWARE_CHIP_ID;
    return OTA_OK;
}

static ota_boot_state_t boot_state(void *ctx)
{
    (void)ctx;
    esp_ota_img_states_t state;
    /* ESP_ERR_NOT_SUPPORTED for a factory app, ESP_ERR_NOT_FOUND without
     * otadata: both boot normally. */
    if (esp_ota_get_state_partition(esp_ota_get_running_partition(), &state) == ESP_OK &&
        state == ESP_OTA_IMG_PENDING_VERIFY) {
        return OTA_BOOT_PENDING_VERIFY;
    }
    return OTA_BOOT_NORMAL;
}

static ota_err_t mark_valid(void *ctx)
{
    (void)ctx;
    esp_err_t err = esp_ota_mark_app_valid_cancel_rollback();
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "cannot confirm the running app: %s", esp_err_to_name(err));
        return OTA_ERR_FLASH;
    }
    return OTA_OK;
}

static ota_err_t rollback_and_reboot(void *ctx)
{
    (void)ctx;
    esp_err_t err = esp_ota_mark_app_invalid_rollback_and_reboot(); /* restarts on success */
    ESP_LOGE(TAG, "cannot roll back: %s", esp_err_to_name(err));
    return err == ESP_ERR_OTA_ROLLBACK_FAILED ? OTA_ERR_STATE : OTA_ERR_FLASH;
}

static void reboot(void *ctx)
{
    (void)ctx;
    esp_restart();
}

/* ---- NVS --------------------------------------------------------------- */

static ota_err_t nvs_result(esp_err_t err)
{
    switch (err) {
    case ESP_OK:
        return OTA_OK;
    case ESP_ERR_NVS_NOT_FOUND:
        return OTA_ERR_NOT_FOUND;
    case ESP_ERR_NVS_INVALID_NAME:
    case ESP_ERR_NVS_KEY_TOO_LONG:
    case ESP_ERR_NVS_INVALID_LENGTH:
    case ESP_ERR_NVS_VALUE_TOO_LONG:
    case ESP_ERR_NVS_TYPE_MISMATCH:
        return OTA_ERR_ARG;
    case ESP_ERR_NO_MEM:
        return OTA_ERR_NO_MEM;
    default:
        return OTA_ERR_FLASH;
    }
}

static ota_err_t kv_get(void *ctx, const char *key, void *buf, size_t *len)
{
    (void)ctx;
    nvs_handle_t nvs;
    /* ESP_ERR_NVS_NOT_FOUND when the namespace was never written. */
    esp_err_t err = nvs_open(NVS_NAMESPACE, NVS_READONLY, &nvs);
    if (err != ESP_OK) {
        return nvs_result(err);
    }
    /* Too small a buffer: ESP_ERR_NVS_INVALID_LENGTH, *len = stored size. */
    err = nvs_get_blob(nvs, key, buf, len);
    nvs_close(nvs);
    return nvs_result(err);
}

static ota_err_t kv_set(void *ctx, const char *key, const void *buf, size_t len)
{
    (void)ctx;
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(NVS_NAMESPACE, NVS_READWRITE, &nvs);
    if (err != ESP_OK) {
        return nvs_result(err);
    }
    err = nvs_set_blob(nvs, key, buf, len);
    if (err == ESP_OK) {
        err = nvs_commit(nvs);
    }
    nvs_close(nvs);
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "NVS %s/%s: %s", NVS_NAMESPACE, key, esp_err_to_name(err));
    }
    return nvs_result(err);
}

static ota_err_t kv_erase(void *ctx, const char *key)
{
    (void)ctx;
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(NVS_NAMESPACE, NVS_READWRITE, &nvs);
    if (err != ESP_OK) {
        return nvs_result(err);
    }
    err = nvs_erase_key(nvs, key);
    if (err == ESP_OK) {
        err = nvs_commit(nvs);
    }
    nvs_close(nvs);
    return nvs_result(err);
}

/* ---- time, randomness, log --------------------------------------------- */

static uint64_t now_ms(void *ctx)
{
    (void)ctx;
    return (uint64_t)(esp_timer_get_time() / 1000);
}

static void sleep_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    /* In 64 bits: pdMS_TO_TICKS() may multiply in TickType_t and overflow
     * for long delays at a 1 kHz tick. Rounded up, so 1 ms is one tick. */
    vTaskDelay((TickType_t)(((uint64_t)ms * configTICK_RATE_HZ + 999u) / 1000u));
}

static uint32_t random32(void *ctx)
{
    (void)ctx;
    return esp_random();
}

static void log_line(void *ctx, int level, const char *message)
{
    (void)ctx;
    switch (level) {
    case 0:
        ESP_LOGE(TAG, "%s", message);
        break;
    case 1:
        ESP_LOGW(TAG, "%s", message);
        break;
    case 2:
        ESP_LOGI(TAG, "%s", message);
        break;
    default:
        ESP_LOGD(TAG, "%s", message);
        break;
    }
}

static const ota_platform_t s_platform = {
    .http_post_json = http_post_json,
    .download = download,
    .read_update = read_update,
    .activate_update = activate_update,
    .abort_update = abort_update,
    .update_slot_id = update_slot_id,
    .running_slot_id = running_slot_id,
    .running_app = running_app,
    .boot_state = boot_state,
    .mark_valid = mark_valid,
    .rollback_and_reboot = rollback_and_reboot,
    .reboot = reboot,
    .kv_get = kv_get,
    .kv_set = kv_set,
    .kv_erase = kv_erase,
    .now_ms = now_ms,
    .sleep_ms = sleep_ms,
    .random32 = random32,
    .log = log_line,
};

/* Used by ota_client_esp.c (declared there; the component has no private
 * header). */
const ota_platform_t *ota_port_esp_platform(void);
void *ota_port_esp_context(void);

const ota_platform_t *ota_port_esp_platform(void)
{
    return &s_platform;
}

void *ota_port_esp_context(void)
{
    return &s_port;
}
