/*
 * ota_client_esp.c: the public API (ota_client.h) over the portable core.
 *
 * One ota_core_t for the device, guarded by a mutex: the OTA task holds it
 * for a whole poll (a download included) and releases it while it sleeps,
 * so the application's own calls wait for the poll in progress to end.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "esp_err.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_random.h"
#include "esp_system.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "nvs.h"
#include "sdkconfig.h"

#include "ota_client.h"
#include "ota_core.h"

#define TAG "ota_client"
#define TOKEN_NAMESPACE "ota_client"
#define TOKEN_KEY "token"
#define TOKEN_MAX 4096

/* Defined in ota_port_esp.c. */
const ota_platform_t *ota_port_esp_platform(void);
void *ota_port_esp_context(void);

#if CONFIG_OTA_CLIENT_TRUST_PEM_FILE
/* CMakeLists.txt embeds CONFIG_OTA_CLIENT_CA_CERT_PATH as text (NUL-terminated)
 * under this name. */
extern const char ota_client_ca_pem_start[] asm("_binary_ota_client_ca_pem_start");
#endif

static ota_core_t s_core;
static SemaphoreHandle_t s_lock;
static bool s_ready;
static TaskHandle_t s_task;
static uint32_t s_poll_interval_ms;

/* ---- helpers ----------------------------------------------------------- */

static esp_err_t to_esp_err(ota_err_t err)
{
    switch (err) {
    case OTA_OK:
        return ESP_OK;
    case OTA_ERR_ARG:
        return ESP_ERR_INVALID_ARG;
    case OTA_ERR_NO_MEM:
        return ESP_ERR_NO_MEM;
    case OTA_ERR_IO:
        return ESP_ERR_OTA_CLIENT_IO;
    case OTA_ERR_HTTP:
        return ESP_ERR_OTA_CLIENT_HTTP;
    case OTA_ERR_PROTOCOL:
        return ESP_ERR_INVALID_RESPONSE;
    case OTA_ERR_IMAGE:
        return ESP_ERR_OTA_VALIDATE_FAILED;
    case OTA_ERR_HASH:
        return ESP_ERR_INVALID_CRC;
    case OTA_ERR_FLASH:
        return ESP_ERR_OTA_CLIENT_FLASH;
    case OTA_ERR_NOT_FOUND:
        return ESP_ERR_NOT_FOUND;
    case OTA_ERR_STATE:
        return ESP_ERR_INVALID_STATE;
    case OTA_ERR_SELF_TEST:
        return ESP_ERR_OTA_CLIENT_SELF_TEST;
    case OTA_ERR_POWER_CUT:
        break;
    }
    return ESP_FAIL;
}

static void lock(void)
{
    xSemaphoreTake(s_lock, portMAX_DELAY);
}

static void unlock(void)
{
    xSemaphoreGive(s_lock);
}

static void sleep_ms(uint32_t ms)
{
    vTaskDelay((TickType_t)(((uint64_t)ms * configTICK_RATE_HZ + 999u) / 1000u));
}

static char *copy_or_default(const char *value, const char *fallback)
{
    const char *chosen = value != NULL ? value : fallback;
    return chosen != NULL ? strdup(chosen) : NULL;
}

/* The device JWT provisioned at the factory: a string (nvs_partition_gen
 * "string" entry) or, failing that, a blob. NULL when there is none. */
static char *token_from_nvs(void)
{
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(TOKEN_NAMESPACE, NVS_READONLY, &nvs);
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "no device token in NVS (%s/%s): %s", TOKEN_NAMESPACE, TOKEN_KEY, esp_err_to_name(err));
        return NULL;
    }
    char *token = NULL;
    size_t len = 0;
    bool as_string = true;
    err = nvs_get_str(nvs, TOKEN_KEY, NULL, &len);
    if (err == ESP_ERR_NVS_TYPE_MISMATCH) {
        as_string = false;
        err = nvs_get_blob(nvs, TOKEN_KEY, NULL, &len);
    }
    if (err == ESP_OK && len > 0 && len <= TOKEN_MAX) {
        token = malloc(len + 1);
        if (token != NULL) {
            err = as_string ? nvs_get_str(nvs, TOKEN_KEY, token, &len) : nvs_get_blob(nvs, TOKEN_KEY, token, &len);
            if (err == ESP_OK) {
                token[len] = '\0';
            } else {
                free(token);
                token = NULL;
            }
        }
    }
    nvs_close(nvs);
    if (token == NULL) {
        ESP_LOGW(TAG, "no usable device token in NVS (%s/%s): %s", TOKEN_NAMESPACE, TOKEN_KEY, esp_err_to_name(err));
    }
    return token;
}

/* ---- set-up ------------------------------------------------------------ */

esp_err_t ota_client_init(const ota_client_config_t *config)
{
    if (s_ready) {
        return ESP_ERR_INVALID_STATE;
    }
    const ota_client_config_t defaults = {0};
    if (config == NULL) {
        config = &defaults;
    }
    if (s_lock == NULL) {
        s_lock = xSemaphoreCreateMutex();
        if (s_lock == NULL) {
            return ESP_ERR_NO_MEM;
        }
    }

    /* The core keeps these pointers for good: they are copied once and
     * never freed after a successful init. */
    char *server_url = copy_or_default(config->server_url, CONFIG_OTA_CLIENT_SERVER_URL);
    char *device_type = copy_or_default(config->device_type, CONFIG_OTA_CLIENT_DEVICE_TYPE);
    char *channel = copy_or_default(config->channel, CONFIG_OTA_CLIENT_CHANNEL);
    char *token = config->device_token != NULL ? strdup(config->device_token) : NULL;
#if CONFIG_OTA_CLIENT_TOKEN_FROM_NVS
    if (config->device_token == NULL) {
        token = token_from_nvs();
    }
#endif
    char *ca_copy = config->ca_cert_pem != NULL ? strdup(config->ca_cert_pem) : NULL;
    const char *ca_cert_pem = ca_copy;
#if CONFIG_OTA_CLIENT_TRUST_PEM_FILE
    if (config->ca_cert_pem == NULL) {
        ca_cert_pem = ota_client_ca_pem_start;
    }
#endif
    if (server_url == NULL || device_type == NULL || channel == NULL ||
        (config->device_token != NULL && token == NULL) || (config->ca_cert_pem != NULL && ca_copy == NULL)) {
        free(server_url);
        free(device_type);
        free(channel);
        free(token);
        free(ca_copy);
        return ESP_ERR_NO_MEM;
    }
    if (token == NULL) {
        ESP_LOGW(TAG, "no device token: the server will refuse the check (401)");
    }

    uint32_t backoff_min_ms = (uint32_t)CONFIG_OTA_CLIENT_BACKOFF_MIN_S * 1000u;
    uint32_t backoff_max_ms = (uint32_t)CONFIG_OTA_CLIENT_BACKOFF_MAX_S * 1000u;
    if (backoff_max_ms < backoff_min_ms) {
        backoff_max_ms = backoff_min_ms;
    }
    const ota_core_config_t core_config = {
        .server_url = server_url,
        .device_type = device_type,
        .channel = channel[0] != '\0' ? channel : NULL,
        .device_token = token,
        .ca_cert_pem = ca_cert_pem,
        .build_number = config->build_number > 0 ? config->build_number : -1,
        .piece_size = CONFIG_OTA_CLIENT_PIECE_SIZE,
        .progress_step = CONFIG_OTA_CLIENT_PROGRESS_STEP,
        .retry_base_ms = backoff_min_ms,
        .retry_max_ms = backoff_max_ms,
        .self_test = config->self_test,
        .self_test_user = config->self_test_user,
    };
    ota_err_t err = ota_core_init(&s_core, &core_config, ota_port_esp_platform(), ota_port_esp_context());
    if (err != OTA_OK) {
        ESP_LOGE(TAG, "configuration refused: a server URL and a device type are required");
        free(server_url);
        free(device_type);
        free(channel);
        free(token);
        free(ca_copy);
        return to_esp_err(err);
    }

    uint64_t interval_ms = (uint64_t)(config->poll_interval_s != 0 ? config->poll_interval_s
                                                                   : (uint32_t)CONFIG_OTA_CLIENT_POLL_INTERVAL_S) *
                           1000u;
    s_poll_interval_ms = interval_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)interval_ms;
    s_ready = true;
    ESP_LOGI(TAG, "server %s, device type %s, channel %s", server_url, device_type,
             channel[0] != '\0' ? channel : "(server default)");
    return ESP_OK;
}

/* ---- the calls --------------------------------------------------------- */

esp_err_t ota_client_check(ota_client_update_t *out)
{
    if (out == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (!s_ready) {
        return ESP_ERR_INVALID_STATE;
    }
    lock();
    ota_err_t err = ota_core_check(&s_core, out);
    unlock();
    return to_esp_err(err);
}

esp_err_t ota_client_download_and_install(const ota_client_update_t *update)
{
    if (update == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (!s_ready) {
        return ESP_ERR_INVALID_STATE;
    }
    lock();
    ota_err_t err = ota_core_install(&s_core, update);
    unlock();
    return to_esp_err(err);
}

esp_err_t ota_client_boot_verdict(ota_boot_outcome_t *outcome)
{
    if (!s_ready) {
        return ESP_ERR_INVALID_STATE;
    }
    ota_boot_outcome_t ignored;
    lock();
    ota_err_t err = ota_core_on_boot(&s_core, outcome != NULL ? outcome : &ignored);
    unlock();
    return to_esp_err(err);
}

esp_err_t ota_client_report_status(int64_t firmware_id, ota_status_t status, int progress,
                                   const char *error_message)
{
    if (!s_ready) {
        return ESP_ERR_INVALID_STATE;
    }
    lock();
    ota_err_t err = ota_core_report(&s_core, firmware_id, status, progress, error_message);
    unlock();
    return to_esp_err(err);
}

/* ---- the task ---------------------------------------------------------- */

static const char *outcome_name(ota_boot_outcome_t outcome)
{
    switch (outcome) {
    case OTA_BOOT_NOTHING:
        return "no update in flight";
    case OTA_BOOT_CONFIRMED:
        return "the new app is confirmed";
    case OTA_BOOT_ROLLED_BACK:
        return "the previous app runs again (rollback)";
    case OTA_BOOT_RESUMABLE:
        return "a cut download will be resumed";
    }
    return "?";
}

static void ota_task(void *arg)
{
    (void)arg;
    ota_boot_outcome_t outcome = OTA_BOOT_NOTHING;
    lock();
    /* Self-test, esp_ota_mark_app_valid_cancel_rollback(), then the success
     * report; or the failed report after a rollback. A self-test that fails
     * does not come back: the previous app boots. */
    ota_err_t err = ota_core_on_boot(&s_core, &outcome);
    unlock();
    if (err == OTA_OK) {
        ESP_LOGI(TAG, "boot: %s", outcome_name(outcome));
    } else {
        /* A report the server did not get is sent again by the next poll. */
        ESP_LOGW(TAG, "boot: %s; error %s", outcome_name(outcome), esp_err_to_name(to_esp_err(err)));
    }

    /* Spread a fleet that powers up together over the first backoff step. */
    uint32_t spread_ms = (uint32_t)CONFIG_OTA_CLIENT_BACKOFF_MIN_S * 1000u;
    uint32_t delay_ms = spread_ms == 0 ? 0 : esp_random() % spread_ms;
    for (;;) {
        sleep_ms(delay_ms);
        bool reboot = false;
        lock();
        err = ota_core_poll(&s_core, &reboot);
        delay_ms = ota_core_next_delay_ms(&s_core, err, s_poll_interval_ms);
        unlock();
        if (reboot) {
            ESP_LOGI(TAG, "the new app is activated: restarting");
            sleep_ms(200); /* let the log drain */
            esp_restart();
        }
        if (err != OTA_OK) {
            ESP_LOGW(TAG, "poll failed (%s); next in %" PRIu32 " s", esp_err_to_name(to_esp_err(err)),
                     delay_ms / 1000u);
        } else {
            ESP_LOGD(TAG, "next poll in %" PRIu32 " s", delay_ms / 1000u);
        }
    }
}

esp_err_t ota_client_start(const ota_client_config_t *config)
{
    if (s_task != NULL) {
        return ESP_ERR_INVALID_STATE;
    }
    if (s_ready) {
        if (config != NULL) {
            return ESP_ERR_INVALID_STATE;
        }
    } else {
        esp_err_t err = ota_client_init(config);
        if (err != ESP_OK) {
            return err;
        }
    }
    /* ESP-IDF's FreeRTOS takes the stack size in bytes. */
    if (xTaskCreate(ota_task, "ota_client", CONFIG_OTA_CLIENT_TASK_STACK_SIZE, NULL, CONFIG_OTA_CLIENT_TASK_PRIORITY,
                    &s_task) != pdPASS) {
        s_task = NULL;
        return ESP_ERR_NO_MEM;
    }
    return ESP_OK;
}
