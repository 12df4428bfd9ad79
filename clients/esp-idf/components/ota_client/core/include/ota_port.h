/*
 * ota_port.h: what the portable OTA core needs from the platform under it.
 *
 * The core (ota_core.c and friends) is plain C99 with no ESP-IDF include:
 * it speaks the server's protocol, keeps the resume record, decides what to
 * report and when to retry. Everything that touches the network, the flash
 * or NVS goes through an ota_platform_t:
 *
 *   - on an ESP32, esp/ota_port_esp.c (esp_http_client, esp_https_ota,
 *     esp_ota_ops, nvs);
 *   - on Linux, host/ota_port_host.c (libcurl, a file per OTA slot, a folder
 *     of files for NVS), used by the CI tests.
 *
 * Every function gets the platform's own context pointer as `ctx`.
 */
#ifndef OTA_PORT_H
#define OTA_PORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Result codes of the core and the platform. 0 is success. */
typedef enum {
    OTA_OK = 0,
    OTA_ERR_ARG = -1,          /**< a bad argument or configuration */
    OTA_ERR_NO_MEM = -2,
    OTA_ERR_IO = -3,           /**< network: connection refused, cut, timed out */
    OTA_ERR_HTTP = -4,         /**< the server answered with an unexpected status */
    OTA_ERR_PROTOCOL = -5,     /**< the server's answer was not what the API says */
    OTA_ERR_IMAGE = -6,        /**< the image does not fit this device (descriptor check) */
    OTA_ERR_HASH = -7,         /**< the downloaded bytes do not have the announced SHA-256 */
    OTA_ERR_FLASH = -8,        /**< writing, reading or activating the update slot failed */
    OTA_ERR_NOT_FOUND = -9,    /**< a key is not in NVS; no update is available */
    OTA_ERR_STATE = -10,       /**< not now: e.g. the running app still waits for its verdict */
    OTA_ERR_SELF_TEST = -11,   /**< the application's self-test refused the new app */
    OTA_ERR_POWER_CUT = -12,   /**< host port only: a simulated power cut ends the process */
} ota_err_t;

/** What the running app says about itself (esp_app_desc_t, trimmed). */
typedef struct {
    char version[33];       /**< e.g. "1.2.0" or "v1.2.0-3-gabc" */
    char project_name[33];
    uint16_t chip_id;       /**< esp_image_header_t chip id: ESP32-P4 is 18 */
    uint32_t secure_version;/**< anti-rollback counter of the running app */
} ota_app_info_t;

/** What the first bytes of a downloaded image say, read before anything is
 *  written to flash. */
typedef struct {
    uint16_t chip_id;
    uint16_t min_chip_rev;  /**< major*100+minor */
    uint16_t max_chip_rev;  /**< 0 or 0xFFFF: not set */
    bool chip_checked_by_platform; /**< ESP-IDF: esp_https_ota checks the chip id and
                                        revision of the first bytes itself, and only the
                                        app descriptor reaches the core (revisions are 0) */
    uint32_t secure_version;
    char version[33];
    char project_name[33];
} ota_image_info_t;

/** How the app came up this time. */
typedef enum {
    OTA_BOOT_NORMAL = 0,         /**< a confirmed (or factory) app */
    OTA_BOOT_PENDING_VERIFY = 1, /**< first boot of a new app: it must confirm itself or be rolled back */
} ota_boot_state_t;

/** One download into the passive OTA slot. */
typedef struct {
    const char *url;         /**< the check answer's download_url (signed; no bearer needed) */
    const char *bearer;      /**< device token for Authorization: Bearer; NULL for a signed link or a URL off the server */
    const char *ca_cert_pem; /**< NULL: the platform's default trust */
    uint64_t file_size;      /**< from the check answer */
    uint64_t resume_from;    /**< bytes already in the slot from an earlier attempt; 0 = fresh */
    uint32_t piece_size;     /**< bytes per Range request (ESP-IDF: max_http_request_size) */
    /** Called once, on a fresh download, with what the image's first bytes
     *  say and before any byte is written. A non-OTA_OK answer aborts the
     *  download with that error. */
    ota_err_t (*check_image)(void *user, const ota_image_info_t *image);
    /** Called as bytes land in flash, with the total written so far
     *  (counting resume_from). The core saves the resume record from here. */
    void (*on_written)(void *user, uint64_t written);
    void *user;
} ota_download_t;

/** The platform. All members are required unless marked optional. */
typedef struct {
    /** POST a JSON body; *answer gets a malloc'd, NUL-terminated body
     *  (freed by the caller with free()) whatever the status. */
    ota_err_t (*http_post_json)(void *ctx, const char *url, const char *bearer, const char *ca_cert_pem,
                                const char *body, int *http_status, char **answer);
    /** Download `d->file_size` bytes into the passive slot, starting at
     *  `d->resume_from`. Returns OTA_OK only when every byte is written.
     *  On OTA_ERR_IO the bytes reported through on_written stay valid, and
     *  the core calls again with resume_from set to them. */
    ota_err_t (*download)(void *ctx, const ota_download_t *d, uint64_t *written);
    /** Read back bytes of the passive slot (for the SHA-256 check). */
    ota_err_t (*read_update)(void *ctx, uint64_t offset, uint8_t *buf, size_t len);
    /** Validate the downloaded image and make it the next boot's app. */
    ota_err_t (*activate_update)(void *ctx, uint64_t image_size);
    /** Forget an unfinished or refused download (nothing to boot from it). */
    void (*abort_update)(void *ctx);
    /** Which app slot is being written / runs now (ESP-IDF: the partition's
     *  flash address). The new app runs when running_slot_id() equals the
     *  update_slot_id() seen when its activation started. */
    uint32_t (*update_slot_id)(void *ctx);
    uint32_t (*running_slot_id)(void *ctx);

    ota_err_t (*running_app)(void *ctx, ota_app_info_t *out);
    ota_boot_state_t (*boot_state)(void *ctx);
    /** esp_ota_mark_app_valid_cancel_rollback() */
    ota_err_t (*mark_valid)(void *ctx);
    /** esp_ota_mark_app_invalid_rollback_and_reboot(): does not return on success. */
    ota_err_t (*rollback_and_reboot)(void *ctx);
    /** esp_restart(): does not return on a device; the host port ends its boot. */
    void (*reboot)(void *ctx);

    /** NVS: a blob per key, in the component's own namespace. kv_get sets
     *  *len to the stored size; OTA_ERR_NOT_FOUND when the key is absent. */
    ota_err_t (*kv_get)(void *ctx, const char *key, void *buf, size_t *len);
    ota_err_t (*kv_set)(void *ctx, const char *key, const void *buf, size_t len);
    ota_err_t (*kv_erase)(void *ctx, const char *key);

    uint64_t (*now_ms)(void *ctx);
    void (*sleep_ms)(void *ctx, uint32_t ms);
    uint32_t (*random32)(void *ctx);
    /** level: 0 error, 1 warning, 2 info, 3 debug. Optional. */
    void (*log)(void *ctx, int level, const char *message);
} ota_platform_t;

#ifdef __cplusplus
}
#endif
#endif /* OTA_PORT_H */
