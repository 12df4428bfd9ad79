/* ota_image.c: what the first bytes of an ESP-IDF app image say, and
 * whether the device may write them over its passive slot. Layout: the
 * 24-byte esp_image_header_t, the first segment's 8-byte header, then
 * esp_app_desc_t at file offset 0x20 (see ESP.md). */
#include "ota_core.h"

#include <stdio.h>
#include <string.h>

#define IMAGE_MAGIC 0xE9
#define APP_DESC_OFFSET 0x20
#define APP_DESC_MAGIC 0xABCD5432u

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void copy_field(char *dst, const uint8_t *src, size_t field_len)
{
    size_t n = 0;
    while (n < field_len && src[n] != '\0') {
        n++;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

ota_err_t ota_image_read_head(const uint8_t *data, size_t len, ota_image_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (data == NULL || len < OTA_IMAGE_HEAD_LEN || data[0] != IMAGE_MAGIC) {
        return OTA_ERR_IMAGE;
    }
    if (le32(data + APP_DESC_OFFSET) != APP_DESC_MAGIC) {
        return OTA_ERR_IMAGE;
    }
    out->chip_id = le16(data + 0x0C);
    out->min_chip_rev = le16(data + 0x0F);
    out->max_chip_rev = le16(data + 0x11);
    out->secure_version = le32(data + 0x24);
    copy_field(out->version, data + 0x30, 32);
    copy_field(out->project_name, data + 0x50, 32);
    return OTA_OK;
}

ota_err_t ota_image_fits(const ota_app_info_t *running, const ota_image_info_t *image, bool newer_build,
                         bool downgrade, char *why, size_t why_len, bool *version_order)
{
    if (version_order != NULL) {
        *version_order = false;
    }
    if (!image->chip_checked_by_platform && image->chip_id != running->chip_id) {
        snprintf(why, why_len, "the image is for chip id %u, this device is chip id %u", image->chip_id,
                 running->chip_id);
        return OTA_ERR_IMAGE;
    }
    if (running->project_name[0] != '\0' && strcmp(image->project_name, running->project_name) != 0) {
        snprintf(why, why_len, "the image is project \"%s\", this device runs \"%s\"", image->project_name,
                 running->project_name);
        return OTA_ERR_IMAGE;
    }
    bool readable;
    int order = ota_version_compare(image->version, running->version, &readable);
    if (!readable) {
        snprintf(why, why_len, "cannot compare the image's version \"%s\" with the running \"%s\"", image->version,
                 running->version);
        return OTA_ERR_IMAGE;
    }
    /* Before the version order: a downgrade changes nothing here, and this
     * objection holds whatever version runs later (the counter only rises). */
    if (image->secure_version < running->secure_version) {
        snprintf(why, why_len, "the image's secure_version %u is below the running app's %u; anti-rollback would erase it",
                 (unsigned)image->secure_version, (unsigned)running->secure_version);
        return OTA_ERR_IMAGE;
    }
    /* Last, so that *version_order means nothing else objects. */
    bool in_order = downgrade ? order < 0 : order > 0 || (order == 0 && newer_build);
    if (!in_order) {
        if (downgrade) {
            snprintf(why, why_len, "the image's version %s is not older than the running %s, but the offer is a "
                     "downgrade", image->version, running->version);
        } else {
            snprintf(why, why_len, "the image's version %s is not newer than the running %s", image->version,
                     running->version);
        }
        if (version_order != NULL) {
            *version_order = true;
        }
        return OTA_ERR_IMAGE;
    }
    return OTA_OK;
}
