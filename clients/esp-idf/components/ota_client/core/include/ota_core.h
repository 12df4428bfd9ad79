/*
 * ota_core.h: the portable OTA client. It talks the server's device API
 * (POST /api/ota/check, GET|HEAD /api/ota/download/{id}, POST
 * /api/ota/status), keeps the resume record in NVS, checks the image before
 * and after the download, and drives the boot-time verdict (confirm and
 * report success, or report a rollback).
 *
 * Nothing here includes ESP-IDF: the platform comes in as ota_platform_t.
 * One ota_core_t per device; not thread-safe (the ESP-IDF task owns it).
 */
#ifndef OTA_CORE_H
#define OTA_CORE_H

#include "ota_port.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OTA_VERSION_MAX 65 /* the server's 64 characters, normalised */
#define OTA_URL_MAX 512

/** The statuses of POST /api/ota/status. */
typedef enum {
    OTA_STATUS_PENDING = 0,
    OTA_STATUS_DOWNLOADING,
    OTA_STATUS_INSTALLING,
    OTA_STATUS_SUCCESS,
    OTA_STATUS_FAILED,
} ota_status_t;

/** Returns the API's name of a status ("downloading"). */
const char *ota_status_name(ota_status_t status);

/** The application's self-test, run on the first boot of a new app before
 *  it is confirmed. Return true when the app works (it reached the cloud,
 *  its peripherals answer...). */
typedef bool (*ota_self_test_fn)(void *user);

typedef struct {
    const char *server_url;   /**< "https://ota.example.com" (no trailing path) */
    const char *device_type;  /**< "scales_bridge_tab5" */
    const char *channel;      /**< "stable" (NULL: the server's default) */
    const char *device_token; /**< the device JWT (Authorization: Bearer) */
    const char *ca_cert_pem;  /**< NULL: the platform's default trust */
    int64_t build_number;     /**< < 0: not sent */
    uint32_t piece_size;      /**< Range piece size; 0 = 64 KiB */
    uint8_t progress_step;    /**< report downloading every N %; 0 = 10 */
    uint8_t max_attempts;     /**< download attempts per install (resumed); 0 = 5 */
    uint32_t retry_base_ms;   /**< first retry delay; 0 = 2 s; doubles up to retry_max_ms */
    uint32_t retry_max_ms;    /**< 0 = 60 s */
    uint32_t resume_save_bytes; /**< save the resume record every N bytes; 0 = 64 KiB */
    ota_self_test_fn self_test; /**< NULL: a new app is kept once a check reaches the server */
    void *self_test_user;
} ota_core_config_t;

/** An offer from POST /api/ota/check. */
typedef struct {
    bool update_available;
    int64_t firmware_id;
    int64_t build_number;     /**< -1 when absent */
    int64_t log_id;           /**< -1 when absent */
    char version[OTA_VERSION_MAX];
    uint64_t file_size;
    uint8_t file_hash[32];
    bool is_mandatory;
    bool is_downgrade;        /**< the server offers a version below the running one on
                                   purpose (a pin or a recall); false when absent */
    char download_url[OTA_URL_MAX];
} ota_update_t;

/** What the boot-time verdict did. */
typedef enum {
    OTA_BOOT_NOTHING = 0,     /**< no update was in flight */
    OTA_BOOT_CONFIRMED,       /**< the new app passed its self-test and reported success */
    OTA_BOOT_ROLLED_BACK,     /**< the previous app runs again; failed/rollback reported */
    OTA_BOOT_RESUMABLE,       /**< a download was cut (power, reset); ota_core_poll resumes it */
} ota_boot_outcome_t;

/** The resume record, kept in NVS under "ota_attempt". */
typedef enum {
    OTA_STAGE_NONE = 0,
    OTA_STAGE_DOWNLOADING = 1, /**< bytes_written of file_size are in the passive slot */
    OTA_STAGE_ACTIVATING = 2,  /**< verified; activation started (a cut here is retried) */
    OTA_STAGE_ACTIVATED = 3,   /**< the slot is the next boot's app; awaiting its verdict */
    OTA_STAGE_CONFIRMED = 4,   /**< the new app confirmed itself; success not yet reported */
    OTA_STAGE_ROLLED_BACK = 5, /**< the old app runs again; failed not yet reported */
} ota_stage_t;

typedef struct {
    uint32_t magic;           /**< OTA_ATTEMPT_MAGIC */
    uint16_t layout;          /**< OTA_ATTEMPT_LAYOUT */
    uint16_t stage;           /**< ota_stage_t */
    int64_t firmware_id;
    int64_t log_id;
    uint64_t file_size;
    uint64_t bytes_written;
    uint8_t file_hash[32];
    char version[OTA_VERSION_MAX];     /**< the new app's version, as the server names it */
    char from_version[OTA_VERSION_MAX];/**< the app that started the update */
    uint32_t target_slot;     /**< platform's update_slot_id() when activation started */
    uint8_t http_refusals;    /**< downloads the server refused in a row (3 ends the attempt) */
    uint8_t unconfirmed_offline; /**< rolled back because the new app never reached the server */
} ota_attempt_t;

#define OTA_ATTEMPT_KEY "ota_attempt"
#define OTA_ROLLED_BACK_KEY "ota_bad_fw" /* the last firmware that rolled back or did not fit: not installed again */
#define OTA_RUNNING_KEY "ota_running_fw" /* the last firmware installed and confirmed: not installed again,
                                            except when offered as a downgrade */
#define OTA_UNFIT_KEY "ota_unfit_fw" /* the last firmware refused for its version order alone: not
                                        installed again while the same version runs and the offer
                                        says the same is_downgrade */
#define OTA_ATTEMPT_MAGIC 0x4F544141u /* "OTAA" */
#define OTA_ATTEMPT_LAYOUT 2

typedef struct {
    ota_core_config_t cfg;
    const ota_platform_t *plat;
    void *ctx;
    ota_attempt_t attempt;   /**< the open attempt (stage NONE: none) */
    uint64_t last_saved;     /**< bytes_written at the last NVS save */
    int last_progress;       /**< last reported progress, -1: none yet */
    uint32_t failures;       /**< consecutive failed polls, for the backoff */
    char last_error[160];    /**< why the last install failed, for the report and the log */
    int last_http_status;    /**< of the last POST; 0 when it did not get an answer */
    int64_t offered_build;   /**< build_number of the offer being installed, -1: none */
    bool offered_downgrade;  /**< the offer being installed says is_downgrade */
    bool refused_for_version;/**< the image was refused for its version order alone */
    bool verifying;          /**< checking from an unconfirmed app: its secure_version is not burned yet */
} ota_core_t;

/** Checks the configuration and loads the resume record. */
ota_err_t ota_core_init(ota_core_t *core, const ota_core_config_t *cfg, const ota_platform_t *plat, void *ctx);

/** Run once after boot, before the first poll: confirms a new app (self-test,
 *  mark valid, then report success), or reports a rollback as failed. */
ota_err_t ota_core_on_boot(ota_core_t *core, ota_boot_outcome_t *outcome);

/** POST /api/ota/check. OTA_OK with update->update_available false when
 *  there is nothing to do. */
ota_err_t ota_core_check(ota_core_t *core, ota_update_t *update);

/** Downloads (resuming a cut download of the same firmware), checks the
 *  image before writing and the SHA-256 after, activates it and reports.
 *  On OTA_OK the caller reboots into the new app. */
ota_err_t ota_core_install(ota_core_t *core, const ota_update_t *update);

/** POST /api/ota/status. progress < 0 and message NULL are not sent. */
ota_err_t ota_core_report(ota_core_t *core, int64_t firmware_id, ota_status_t status, int progress,
                          const char *message);

/** One poll: check, and install what is offered. *reboot is set when the
 *  new app is activated and the device should restart. */
ota_err_t ota_core_poll(ota_core_t *core, bool *reboot);

/** Milliseconds until the next poll: `interval_ms` with ±10 % jitter after a
 *  good poll; after n failures, min(retry_max_ms, interval, base*2^(n-1)) with
 *  equal jitter (half fixed, half random). */
uint32_t ota_core_next_delay_ms(ota_core_t *core, ota_err_t last, uint32_t interval_ms);

/** The pure backoff rule behind ota_core_next_delay_ms (for tests). */
uint32_t ota_backoff_ms(uint32_t failures, uint32_t base_ms, uint32_t max_ms, uint32_t random);

/** Compare two versions as the server does (SemVer 2.0, leading "v",
 *  "1" and "1.2" short forms). <0, 0, >0; *ok false if either is unreadable. */
int ota_version_compare(const char *a, const char *b, bool *ok);

/** Reads the image header and esp_app_desc_t from the first `len` bytes of
 *  an app image (at least OTA_IMAGE_HEAD_LEN). */
#define OTA_IMAGE_HEAD_LEN 0x100
ota_err_t ota_image_read_head(const uint8_t *data, size_t len, ota_image_info_t *out);

/** Whether an image may be written over the passive slot of a device
 *  running `running`: same chip and project, a readable version, a
 *  secure_version not below the running one, and a version in the right
 *  order against the running one:
 *    - `downgrade` false: newer than the running one, or the same version
 *      when `newer_build` (the offer's build_number is higher than the
 *      running one's);
 *    - `downgrade` true (the offer says is_downgrade): strictly older than
 *      the running one. The same or a newer version is refused: the offer
 *      and the image disagree.
 *  Writes the reason to `why`. `*version_order` (optional) is set to true
 *  when the version order is the only objection, one that may go away once
 *  another version runs; false otherwise. */
ota_err_t ota_image_fits(const ota_app_info_t *running, const ota_image_info_t *image, bool newer_build,
                         bool downgrade, char *why, size_t why_len, bool *version_order);

/** Parses a check answer (for tests). */
ota_err_t ota_parse_check_answer(const char *json, ota_update_t *out);

/** Builds the JSON bodies (malloc'd; free() them). */
char *ota_build_check_request(const ota_core_config_t *cfg, const ota_app_info_t *running, bool with_secure_version);
char *ota_build_status_request(int64_t firmware_id, ota_status_t status, int progress, const char *message);

#ifdef __cplusplus
}
#endif
#endif /* OTA_CORE_H */
