/* ota_json.c: the JSON bodies of the device API (API.md), with cJSON. */
#include "ota_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"

const char *ota_status_name(ota_status_t status)
{
    switch (status) {
    case OTA_STATUS_PENDING: return "pending";
    case OTA_STATUS_DOWNLOADING: return "downloading";
    case OTA_STATUS_INSTALLING: return "installing";
    case OTA_STATUS_SUCCESS: return "success";
    case OTA_STATUS_FAILED: return "failed";
    }
    return "failed";
}

char *ota_build_check_request(const ota_core_config_t *cfg, const ota_app_info_t *running, bool with_secure_version)
{
    cJSON *body = cJSON_CreateObject();
    if (body == NULL) {
        return NULL;
    }
    bool ok = cJSON_AddStringToObject(body, "device_type", cfg->device_type) != NULL &&
              cJSON_AddStringToObject(body, "current_version", running->version) != NULL;
    if (ok && with_secure_version) {
        ok = cJSON_AddNumberToObject(body, "secure_version", running->secure_version) != NULL;
    }
    if (ok && cfg->build_number >= 0) {
        ok = cJSON_AddNumberToObject(body, "build_number", (double)cfg->build_number) != NULL;
    }
    if (ok && cfg->channel != NULL && cfg->channel[0] != '\0') {
        ok = cJSON_AddStringToObject(body, "channel", cfg->channel) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    return text;
}

char *ota_build_status_request(int64_t firmware_id, ota_status_t status, int progress, const char *message)
{
    cJSON *body = cJSON_CreateObject();
    if (body == NULL) {
        return NULL;
    }
    bool ok = cJSON_AddNumberToObject(body, "firmware_id", (double)firmware_id) != NULL &&
              cJSON_AddStringToObject(body, "status", ota_status_name(status)) != NULL;
    if (ok && progress >= 0) {
        ok = cJSON_AddNumberToObject(body, "progress", progress > 100 ? 100 : progress) != NULL;
    }
    if (ok && message != NULL) {
        ok = cJSON_AddStringToObject(body, "error_message", message) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    return text;
}

/* A JSON number that is a whole, non-negative integer below 2^53. */
static bool read_count(const cJSON *object, const char *name, int64_t *out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    if (!cJSON_IsNumber(item)) {
        return false;
    }
    double v = item->valuedouble;
    if (!(v >= 0 && v < 9007199254740992.0) || floor(v) != v) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool read_text(const cJSON *object, const char *name, char *out, size_t cap)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    if (!cJSON_IsString(item) || item->valuestring == NULL || strlen(item->valuestring) >= cap) {
        return false;
    }
    strcpy(out, item->valuestring);
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_sha256(const cJSON *object, const char *name, uint8_t out[32])
{
    char hex[65];
    if (!read_text(object, name, hex, sizeof hex) || strlen(hex) != 64) {
        return false;
    }
    for (int i = 0; i < 32; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

ota_err_t ota_parse_check_answer(const char *json, ota_update_t *out)
{
    memset(out, 0, sizeof *out);
    out->build_number = -1;
    out->log_id = -1;
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return OTA_ERR_PROTOCOL;
    }
    ota_err_t err = OTA_ERR_PROTOCOL;
    const cJSON *available = cJSON_GetObjectItemCaseSensitive(root, "update_available");
    if (!cJSON_IsBool(available)) {
        goto done;
    }
    out->update_available = cJSON_IsTrue(available);
    if (!out->update_available) {
        err = OTA_OK;
        goto done;
    }
    int64_t size;
    if (!read_count(root, "firmware_id", &out->firmware_id) || !read_count(root, "file_size", &size) ||
        size == 0 || !read_text(root, "version", out->version, sizeof out->version) ||
        !read_text(root, "download_url", out->download_url, sizeof out->download_url) ||
        !read_sha256(root, "file_hash", out->file_hash)) {
        goto done;
    }
    out->file_size = (uint64_t)size;
    int64_t n;
    if (read_count(root, "build_number", &n)) {
        out->build_number = n;
    }
    if (read_count(root, "log_id", &n)) {
        out->log_id = n;
    }
    out->is_mandatory = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "is_mandatory"));
    /* Absent means false: servers before downgrades do not send it. Present,
     * it must be a boolean: the fit check depends on it. */
    const cJSON *downgrade = cJSON_GetObjectItemCaseSensitive(root, "is_downgrade");
    if (downgrade != NULL && !cJSON_IsBool(downgrade)) {
        goto done;
    }
    out->is_downgrade = cJSON_IsTrue(downgrade);
    err = OTA_OK;
done:
    cJSON_Delete(root);
    return err;
}
