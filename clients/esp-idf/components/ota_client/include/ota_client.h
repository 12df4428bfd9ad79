/*
 * ota_client.h: the OTA client's public interface for ESP-IDF applications.
 *
 * Two ways to use it:
 *
 *  - ota_client_start(): a FreeRTOS task that gives the boot verdict once
 *    (self-test, confirm the new app, report success; or report a rollback)
 *    and then polls the server, installs what it offers and restarts into it.
 *
 *  - ota_client_init() and then ota_client_check(),
 *    ota_client_download_and_install() and ota_client_report_status(), for an
 *    application that decides itself when to update (e.g. after asking the
 *    user). It must then give the boot verdict itself, once after each
 *    boot: ota_client_boot_verdict().
 *
 * Every function is safe to call from any task: a mutex serialises them with
 * the background task. A call waits while the task is busy (a download can
 * take minutes). Do not call them from the self-test hook.
 */
#ifndef OTA_CLIENT_H
#define OTA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "esp_err.h"
#include "ota_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An offer from POST /api/ota/check (see ota_update_t in ota_core.h). */
typedef ota_update_t ota_client_update_t;

/** Error codes of this component that ESP-IDF has no name for
 *  (esp_err_to_name() prints "UNKNOWN ERROR" for them). The others map to
 *  ESP-IDF's own codes: ESP_ERR_INVALID_ARG, ESP_ERR_NO_MEM,
 *  ESP_ERR_INVALID_RESPONSE (the server's answer is not what the API says),
 *  ESP_ERR_OTA_VALIDATE_FAILED (the image does not fit this device),
 *  ESP_ERR_INVALID_CRC (SHA-256 mismatch), ESP_ERR_NOT_FOUND,
 *  ESP_ERR_INVALID_STATE (not now: e.g. the running app awaits its verdict). */
#define ESP_ERR_OTA_CLIENT_BASE 0x1F000
#define ESP_ERR_OTA_CLIENT_IO (ESP_ERR_OTA_CLIENT_BASE + 1)        /*!< network: refused, cut, timed out; retry later */
#define ESP_ERR_OTA_CLIENT_HTTP (ESP_ERR_OTA_CLIENT_BASE + 2)      /*!< the server answered with an unexpected HTTP status */
#define ESP_ERR_OTA_CLIENT_FLASH (ESP_ERR_OTA_CLIENT_BASE + 3)     /*!< writing, reading or activating the OTA slot failed */
#define ESP_ERR_OTA_CLIENT_SELF_TEST (ESP_ERR_OTA_CLIENT_BASE + 4) /*!< the self-test refused the new app */

/**
 * Configuration. Zero or NULL fields take the menuconfig ("OTA client")
 * values, so `ota_client_config_t cfg = {0};` is a valid configuration.
 * Strings are copied: they need not outlive the call.
 */
typedef struct {
    const char *server_url;   /**< "https://ota.example.com"; NULL: CONFIG_OTA_CLIENT_SERVER_URL */
    const char *device_type;  /**< NULL: CONFIG_OTA_CLIENT_DEVICE_TYPE */
    const char *channel;      /**< NULL: CONFIG_OTA_CLIENT_CHANNEL ("" lets the server choose) */
    const char *device_token; /**< the device JWT; NULL: read from NVS (namespace "ota_client",
                                   key "token") when CONFIG_OTA_CLIENT_TOKEN_FROM_NVS is set */
    const char *ca_cert_pem;  /**< server CA, PEM; NULL: the menuconfig choice (certificate
                                   bundle or embedded PEM file) */
    uint32_t poll_interval_s; /**< 0: CONFIG_OTA_CLIENT_POLL_INTERVAL_S */
    int64_t build_number;     /**< the running build's number, sent in the check so that
                                   builds of one version are told apart; <= 0: not sent */
    /** Runs on the first boot of a new app, before it is confirmed, in the
     *  OTA task. Return true when the app works (network up, peripherals
     *  answer). false rolls back to the previous app and restarts. NULL:
     *  the app is kept once a check gets any HTTP answer from the server
     *  (8 tries, about 10 minutes at the default backoff); if none does,
     *  it is rolled back, and may be offered and installed again later. */
    ota_self_test_fn self_test;
    void *self_test_user;     /**< passed to self_test */
} ota_client_config_t;

/**
 * Sets the client up without starting its task. Needed before
 * ota_client_check(), ota_client_download_and_install() and
 * ota_client_report_status() when ota_client_start() is not used.
 * nvs_flash_init() must have been called.
 *
 * @param config NULL: menuconfig values for everything.
 * @return ESP_OK; ESP_ERR_INVALID_STATE if already initialised;
 *         ESP_ERR_INVALID_ARG if no server URL or device type is configured;
 *         ESP_ERR_NO_MEM.
 */
esp_err_t ota_client_init(const ota_client_config_t *config);

/**
 * The boot verdict, for applications that do not use ota_client_start()
 * (whose task gives it by itself). Call it once after each boot, when the
 * network is up: on the first boot of a new app it runs the self-test hook,
 * calls esp_ota_mark_app_valid_cancel_rollback() and only then reports
 * success; after a rollback it reports failed with "rollback: ...". A
 * self-test that fails rolls back and restarts (the call does not return).
 *
 * @param[out] outcome what happened (may be NULL).
 * @return ESP_OK; ESP_ERR_OTA_CLIENT_IO or _HTTP when the report did not
 *         reach the server (the next check or install sends it again);
 *         ESP_ERR_INVALID_STATE (not initialised).
 */
esp_err_t ota_client_boot_verdict(ota_boot_outcome_t *outcome);

/**
 * Asks the server whether an update is offered (POST /api/ota/check).
 *
 * @param[out] out out->update_available tells; the rest is set when it is true.
 * @return ESP_OK also when nothing is offered; ESP_ERR_OTA_CLIENT_IO,
 *         ESP_ERR_OTA_CLIENT_HTTP, ESP_ERR_INVALID_RESPONSE, ESP_ERR_INVALID_STATE
 *         (not initialised).
 */
esp_err_t ota_client_check(ota_client_update_t *out);

/**
 * Downloads the offered image into the passive OTA slot (resuming a cut
 * download of the same firmware), checks its descriptor before writing and
 * its SHA-256 after, makes it the next boot's app and reports progress to the
 * server. Does not restart: call esp_restart() when the application is ready.
 *
 * @return ESP_OK when the new app is activated; ESP_ERR_OTA_CLIENT_IO when the
 *         download was cut too often (calling again resumes it); see the
 *         error codes above for the rest.
 */
esp_err_t ota_client_download_and_install(const ota_client_update_t *update);

/**
 * Reports a status for a firmware (POST /api/ota/status).
 *
 * @param progress      0-100, or < 0 to leave it out.
 * @param error_message NULL to leave it out.
 */
esp_err_t ota_client_report_status(int64_t firmware_id, ota_status_t status, int progress,
                                   const char *error_message);

/**
 * Starts the OTA task (stack CONFIG_OTA_CLIENT_TASK_STACK_SIZE, priority
 * CONFIG_OTA_CLIENT_TASK_PRIORITY). The task gives the boot verdict once,
 * then polls every poll_interval_s (±10 %; after failures an exponential
 * backoff between CONFIG_OTA_CLIENT_BACKOFF_MIN_S and _MAX_S) and calls
 * esp_restart() when a new app is activated. Start it once the network is
 * up; a failed poll is simply retried later.
 *
 * @param config as for ota_client_init(); must be NULL when ota_client_init()
 *               was already called (the configuration is set then).
 * @return ESP_OK; ESP_ERR_INVALID_STATE if the task already runs, or if a
 *         config is given after ota_client_init(); errors of ota_client_init();
 *         ESP_ERR_NO_MEM if the task cannot be created.
 */
esp_err_t ota_client_start(const ota_client_config_t *config);

#ifdef __cplusplus
}
#endif
#endif /* OTA_CLIENT_H */
