/* ota_core.c: the client's state machine.
 *
 *   poll:    check -> [install: download (resumable) -> SHA-256 -> activate] -> reboot
 *   boot:    new app pending verify -> self-test -> mark valid -> report success
 *            old app running while an attempt is activated -> report failed (rollback)
 *
 * The attempt record in NVS ("ota_attempt") is what survives a reboot: the
 * firmware being installed, how many of its bytes are in the passive slot,
 * and how far the install got. */
#include "ota_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_sha256.h"

#define DEFAULT_PIECE_SIZE (64u * 1024u)
#define DEFAULT_PROGRESS_STEP 10
#define DEFAULT_MAX_ATTEMPTS 5
#define DEFAULT_RETRY_BASE_MS 2000u
#define DEFAULT_RETRY_MAX_MS 60000u
#define READ_BACK_CHUNK 4096

static void logf_(ota_core_t *core, int level, const char *fmt, ...)
{
    if (core->plat->log == NULL) {
        return;
    }
    char line[256];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    core->plat->log(core->ctx, level, line);
}

static void fail_because(ota_core_t *core, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(core->last_error, sizeof core->last_error, fmt, args);
    va_end(args);
    logf_(core, 0, "%s", core->last_error);
}

/* ---- the attempt record ------------------------------------------------ */

static ota_err_t save_attempt(ota_core_t *core)
{
    ota_err_t err = core->plat->kv_set(core->ctx, OTA_ATTEMPT_KEY, &core->attempt, sizeof core->attempt);
    if (err == OTA_OK) {
        core->last_saved = core->attempt.bytes_written;
    } else {
        logf_(core, 1, "could not save the attempt record (%d)", err);
    }
    return err;
}

static void clear_attempt(ota_core_t *core)
{
    memset(&core->attempt, 0, sizeof core->attempt);
    core->last_saved = 0;
    ota_err_t err = core->plat->kv_erase(core->ctx, OTA_ATTEMPT_KEY);
    if (err != OTA_OK && err != OTA_ERR_NOT_FOUND) {
        logf_(core, 1, "could not erase the attempt record (%d)", err);
    }
}

static void load_attempt(ota_core_t *core)
{
    ota_attempt_t stored;
    size_t len = sizeof stored;
    memset(&core->attempt, 0, sizeof core->attempt);
    ota_err_t err = core->plat->kv_get(core->ctx, OTA_ATTEMPT_KEY, &stored, &len);
    if (err == OTA_ERR_NOT_FOUND) {
        return;
    }
    bool valid = err == OTA_OK && len == sizeof stored && stored.magic == OTA_ATTEMPT_MAGIC &&
                 stored.layout == OTA_ATTEMPT_LAYOUT && stored.stage >= OTA_STAGE_DOWNLOADING &&
                 stored.stage <= OTA_STAGE_ROLLED_BACK && stored.bytes_written <= stored.file_size &&
                 memchr(stored.version, '\0', sizeof stored.version) != NULL &&
                 memchr(stored.from_version, '\0', sizeof stored.from_version) != NULL;
    if (!valid) {
        logf_(core, 1, "discarding an unreadable attempt record");
        clear_attempt(core);
        return;
    }
    core->attempt = stored;
    core->last_saved = stored.bytes_written;
}

/* ---- set-up ------------------------------------------------------------ */

ota_err_t ota_core_init(ota_core_t *core, const ota_core_config_t *cfg, const ota_platform_t *plat, void *ctx)
{
    if (core == NULL || cfg == NULL || plat == NULL || cfg->server_url == NULL || cfg->server_url[0] == '\0' ||
        cfg->device_type == NULL || cfg->device_type[0] == '\0') {
        return OTA_ERR_ARG;
    }
    memset(core, 0, sizeof *core);
    core->cfg = *cfg;
    core->plat = plat;
    core->ctx = ctx;
    if (core->cfg.piece_size == 0) core->cfg.piece_size = DEFAULT_PIECE_SIZE;
    if (core->cfg.progress_step == 0 || core->cfg.progress_step > 100) core->cfg.progress_step = DEFAULT_PROGRESS_STEP;
    if (core->cfg.max_attempts == 0) core->cfg.max_attempts = DEFAULT_MAX_ATTEMPTS;
    if (core->cfg.retry_base_ms == 0) core->cfg.retry_base_ms = DEFAULT_RETRY_BASE_MS;
    if (core->cfg.retry_max_ms == 0) core->cfg.retry_max_ms = DEFAULT_RETRY_MAX_MS;
    if (core->cfg.resume_save_bytes == 0) core->cfg.resume_save_bytes = core->cfg.piece_size;
    core->last_progress = -1;
    core->offered_build = -1;
    load_attempt(core);
    return OTA_OK;
}

/* ---- HTTP -------------------------------------------------------------- */

static char *endpoint(const ota_core_t *core, const char *path)
{
    const char *base = core->cfg.server_url;
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/') {
        len--;
    }
    size_t size = len + strlen(path) + 1;
    char *url = malloc(size);
    if (url != NULL) {
        snprintf(url, size, "%.*s%s", (int)len, base, path);
    }
    return url;
}

/* POSTs to the server; OTA_ERR_HTTP unless it answers 200. */
static ota_err_t post(ota_core_t *core, const char *path, char *body, char **answer)
{
    *answer = NULL;
    char *url = endpoint(core, path);
    if (url == NULL || body == NULL) {
        free(url);
        free(body);
        return OTA_ERR_NO_MEM;
    }
    int status = 0;
    ota_err_t err = core->plat->http_post_json(core->ctx, url, core->cfg.device_token, core->cfg.ca_cert_pem, body,
                                               &status, answer);
    core->last_http_status = err == OTA_OK ? status : 0;
    if (err == OTA_OK && status != 200) {
        logf_(core, 1, "POST %s answered %d: %.160s", path, status, *answer ? *answer : "");
        err = OTA_ERR_HTTP;
    }
    free(url);
    free(body);
    return err;
}

ota_err_t ota_core_report(ota_core_t *core, int64_t firmware_id, ota_status_t status, int progress,
                          const char *message)
{
    char *answer;
    ota_err_t err = post(core, "/api/ota/status", ota_build_status_request(firmware_id, status, progress, message),
                         &answer);
    free(answer);
    if (err == OTA_OK && progress >= 0) {
        logf_(core, 2, "reported %s %d %% for firmware %lld", ota_status_name(status), progress, (long long)firmware_id);
    } else if (err == OTA_OK) {
        logf_(core, 2, "reported %s for firmware %lld", ota_status_name(status), (long long)firmware_id);
    }
    return err;
}

ota_err_t ota_core_check(ota_core_t *core, ota_update_t *update)
{
    ota_app_info_t running;
    ota_err_t err = core->plat->running_app(core->ctx, &running);
    if (err != OTA_OK) {
        return err;
    }
    char *answer;
    err = post(core, "/api/ota/check", ota_build_check_request(&core->cfg, &running, !core->verifying), &answer);
    if (err == OTA_OK) {
        err = ota_parse_check_answer(answer, update);
        if (err != OTA_OK) {
            logf_(core, 0, "the check answer is not what the API describes");
        }
    }
    free(answer);
    return err;
}

/* ---- boot-time verdict ------------------------------------------------- */

/* A firmware named by id and hash, kept in NVS: the last one that rolled
 * back or did not fit (OTA_ROLLED_BACK_KEY), and the last one installed
 * (OTA_RUNNING_KEY). Neither is installed again, though the server may keep
 * offering them until an operator stops it. Their layout is fixed: an older
 * client a downgrade goes back to reads them too. */
typedef struct {
    int64_t firmware_id;
    uint8_t file_hash[32];
} ota_firmware_ref_t;

/* The last firmware refused for its version order alone (OTA_UNFIT_KEY),
 * with what that verdict depended on: the version that ran, and whether the
 * offer was a downgrade. Since downgrades, the running version can go down
 * as well as up, so the refusal holds only while both are the same. */
typedef struct {
    ota_firmware_ref_t fw;
    uint8_t downgrade;
    char running_version[sizeof ((ota_app_info_t *)0)->version];
} ota_unfit_ref_t;

static void remember(ota_core_t *core, const char *key, int64_t firmware_id, const uint8_t file_hash[32])
{
    ota_firmware_ref_t fw = {.firmware_id = firmware_id};
    memcpy(fw.file_hash, file_hash, sizeof fw.file_hash);
    if (core->plat->kv_set(core->ctx, key, &fw, sizeof fw) != OTA_OK) {
        logf_(core, 1, "could not remember firmware %lld under %s", (long long)firmware_id, key);
    }
}

static bool remembered(ota_core_t *core, const char *key, const ota_update_t *u)
{
    ota_firmware_ref_t fw;
    size_t len = sizeof fw;
    return core->plat->kv_get(core->ctx, key, &fw, &len) == OTA_OK && len == sizeof fw &&
           fw.firmware_id == u->firmware_id && memcmp(fw.file_hash, u->file_hash, sizeof fw.file_hash) == 0;
}

static void remember_bad(ota_core_t *core, int64_t firmware_id, const uint8_t file_hash[32])
{
    remember(core, OTA_ROLLED_BACK_KEY, firmware_id, file_hash);
}

static void remember_unfit(ota_core_t *core, int64_t firmware_id, const uint8_t file_hash[32], bool downgrade)
{
    ota_app_info_t running;
    ota_unfit_ref_t ref;
    memset(&ref, 0, sizeof ref);
    if (core->plat->running_app(core->ctx, &running) != OTA_OK) {
        return;
    }
    ref.fw.firmware_id = firmware_id;
    memcpy(ref.fw.file_hash, file_hash, sizeof ref.fw.file_hash);
    ref.downgrade = downgrade ? 1 : 0;
    snprintf(ref.running_version, sizeof ref.running_version, "%s", running.version);
    if (core->plat->kv_set(core->ctx, OTA_UNFIT_KEY, &ref, sizeof ref) != OTA_OK) {
        logf_(core, 1, "could not remember firmware %lld under %s", (long long)firmware_id, OTA_UNFIT_KEY);
    }
}

/* Refused for its version order, offered the same way, while the version
 * that runs now ran. */
static bool unfit_here(ota_core_t *core, const ota_update_t *u)
{
    ota_unfit_ref_t ref;
    size_t len = sizeof ref;
    ota_app_info_t running;
    return core->plat->kv_get(core->ctx, OTA_UNFIT_KEY, &ref, &len) == OTA_OK && len == sizeof ref &&
           ref.fw.firmware_id == u->firmware_id &&
           memcmp(ref.fw.file_hash, u->file_hash, sizeof ref.fw.file_hash) == 0 &&
           ref.downgrade == (u->is_downgrade ? 1 : 0) &&
           memchr(ref.running_version, '\0', sizeof ref.running_version) != NULL &&
           core->plat->running_app(core->ctx, &running) == OTA_OK &&
           strcmp(ref.running_version, running.version) == 0;
}

/* A firmware that rolled back or did not fit here, or the one installed
 * last (offered again when the build_number the app sends lags behind the
 * server's): installing it again would only loop. A downgrade offer is
 * never the running firmware (the server offers a version below the one
 * the device reports), so the last installed one does not stop it: a
 * device that went 1.0.0 -> 1.1.0 -> 1.0.0 -> 1.1.0 installs each. A
 * firmware that rolled back here stays refused, downgrade or not. */
static bool refused_before(ota_core_t *core, const ota_update_t *u)
{
    return remembered(core, OTA_ROLLED_BACK_KEY, u) || (!u->is_downgrade && remembered(core, OTA_RUNNING_KEY, u)) ||
           unfit_here(core, u);
}

/* The server will never take this report (4xx other than 401, which a new
 * token cures, and 408/429): keeping it would block every later poll. */
static bool refused_for_good(const ota_core_t *core, ota_err_t err)
{
    int status = core->last_http_status;
    return err == OTA_ERR_HTTP && status >= 400 && status < 500 && status != 401 && status != 408 && status != 429;
}

static ota_err_t report_success(ota_core_t *core)
{
    int64_t id = core->attempt.firmware_id;
    ota_err_t err = ota_core_report(core, id, OTA_STATUS_SUCCESS, 100, NULL);
    if (err == OTA_ERR_HTTP && core->last_http_status == 409) {
        /* The row is not at installing: an earlier report was lost, or the
         * answer to this very report was (then the row is already final).
         * Walk it up; the moves it has made already are refused harmlessly. */
        logf_(core, 1, "success refused (409): replaying the earlier steps");
        ota_core_report(core, id, OTA_STATUS_DOWNLOADING, -1, NULL);
        ota_core_report(core, id, OTA_STATUS_INSTALLING, 100, NULL);
        err = ota_core_report(core, id, OTA_STATUS_SUCCESS, 100, NULL);
    }
    return err;
}

/* Sends the final report the attempt record still owes, and forgets the
 * attempt once the server has it (or will never take it). */
static ota_err_t settle(ota_core_t *core)
{
    ota_err_t err;
    if (core->attempt.stage == OTA_STAGE_CONFIRMED) {
        err = report_success(core);
    } else if (core->attempt.unconfirmed_offline) {
        /* Not the build's fault for sure (the server may have been down):
         * it may be offered and installed again. */
        char message[2 * OTA_VERSION_MAX + 96];
        snprintf(message, sizeof message, "rollback: %s runs again; %s could not reach the server to confirm itself",
                 core->attempt.from_version, core->attempt.version);
        err = ota_core_report(core, core->attempt.firmware_id, OTA_STATUS_FAILED, -1, message);
    } else {
        remember_bad(core, core->attempt.firmware_id, core->attempt.file_hash);
        char message[2 * OTA_VERSION_MAX + 64];
        snprintf(message, sizeof message, "rollback: %s runs again; %s did not confirm itself",
                 core->attempt.from_version, core->attempt.version);
        err = ota_core_report(core, core->attempt.firmware_id, OTA_STATUS_FAILED, -1, message);
    }
    if (refused_for_good(core, err)) {
        logf_(core, 1, "the server refuses the final report (HTTP %d); dropping it", core->last_http_status);
        err = OTA_OK;
    }
    if (err == OTA_OK) {
        clear_attempt(core);
    }
    return err;
}

/* Without an application self-test, a new app must at least reach the
 * server: a build that cannot is not kept, or it could never be updated.
 * Any HTTP answer counts (a 5xx during a rollout is the server's problem,
 * not the build's); 8 tries span about 10 minutes at the default backoff. */
static bool reaches_the_server(ota_core_t *core)
{
    core->verifying = true;
    for (uint32_t attempt = 1;; attempt++) {
        ota_update_t ignored;
        if (ota_core_check(core, &ignored) == OTA_OK || core->last_http_status != 0) {
            core->verifying = false;
            return true;
        }
        if (attempt >= 8) {
            core->verifying = false;
            return false;
        }
        core->plat->sleep_ms(core->ctx, ota_backoff_ms(attempt, core->cfg.retry_base_ms, core->cfg.retry_max_ms,
                                                       core->plat->random32(core->ctx)));
    }
}

ota_err_t ota_core_on_boot(ota_core_t *core, ota_boot_outcome_t *outcome)
{
    *outcome = OTA_BOOT_NOTHING;
    ota_app_info_t running;
    ota_err_t err = core->plat->running_app(core->ctx, &running);
    if (err != OTA_OK) {
        return err;
    }
    bool pending_verify = core->plat->boot_state(core->ctx) == OTA_BOOT_PENDING_VERIFY;
    bool runs_new = core->plat->running_slot_id(core->ctx) == core->attempt.target_slot;

    if (core->attempt.stage == OTA_STAGE_ACTIVATING) {
        if (runs_new) {
            /* Activated; the cut came before the record said so. */
            core->attempt.stage = OTA_STAGE_ACTIVATED;
        } else {
            /* The cut came during the activation: verify and activate again. */
            logf_(core, 1, "the activation of %s was cut; it will be checked and activated again",
                  core->attempt.version);
            core->attempt.stage = OTA_STAGE_DOWNLOADING;
            core->attempt.bytes_written = core->attempt.file_size;
        }
        save_attempt(core);
    }
    if (core->attempt.stage == OTA_STAGE_ACTIVATED && !runs_new) {
        logf_(core, 1, "rolled back: %s runs, not %s", running.version, core->attempt.version);
        core->attempt.stage = OTA_STAGE_ROLLED_BACK;
        save_attempt(core);
    }
    if (pending_verify) {
        /* A new app must prove itself before it is kept, whether or not this
         * client installed it (a USB flash also boots pending verify). */
        bool offline = false;
        bool works = core->cfg.self_test != NULL ? core->cfg.self_test(core->cfg.self_test_user)
                                                 : !(offline = !reaches_the_server(core));
        if (!works) {
            logf_(core, 0, "the self-test failed: rolling back to the previous app");
            if (offline && core->attempt.stage == OTA_STAGE_ACTIVATED) {
                core->attempt.unconfirmed_offline = 1;
                save_attempt(core);
            }
            return core->plat->rollback_and_reboot(core->ctx) == OTA_OK ? OTA_ERR_SELF_TEST : OTA_ERR_STATE;
        }
        err = core->plat->mark_valid(core->ctx);
        if (err != OTA_OK) {
            return err;
        }
        logf_(core, 2, "%s passed its self-test and is confirmed", running.version);
    }
    if (core->attempt.stage == OTA_STAGE_ACTIVATED) {
        /* Confirmed above; or rollback is off in the bootloader, and running
         * the new app is the verdict. */
        remember(core, OTA_RUNNING_KEY, core->attempt.firmware_id, core->attempt.file_hash);
        core->attempt.stage = OTA_STAGE_CONFIRMED;
        save_attempt(core);
    }

    switch ((ota_stage_t)core->attempt.stage) {
    case OTA_STAGE_CONFIRMED:
        *outcome = OTA_BOOT_CONFIRMED;
        return settle(core);
    case OTA_STAGE_ROLLED_BACK:
        *outcome = OTA_BOOT_ROLLED_BACK;
        return settle(core);
    case OTA_STAGE_DOWNLOADING:
        *outcome = OTA_BOOT_RESUMABLE;
        return OTA_OK;
    default:
        return OTA_OK;
    }
}

/* ---- install ----------------------------------------------------------- */

static void report_progress(ota_core_t *core, uint64_t written)
{
    uint64_t size = core->attempt.file_size;
    int percent = size == 0 ? 0 : (int)(written * 100 / size);
    int step = core->cfg.progress_step;
    int reached = percent / step * step;
    if (reached >= 100 || reached <= core->last_progress) {
        return;
    }
    if (ota_core_report(core, core->attempt.firmware_id, OTA_STATUS_DOWNLOADING, reached, NULL) == OTA_OK) {
        core->last_progress = reached;
    }
}

static void on_written(void *user, uint64_t written)
{
    ota_core_t *core = user;
    if (written > core->attempt.file_size) {
        written = core->attempt.file_size;
    }
    core->attempt.bytes_written = written;
    if (written - core->last_saved >= core->cfg.resume_save_bytes || written == core->attempt.file_size) {
        save_attempt(core);
    }
    /* From what NVS holds: a resume after a power cut never reports less. */
    report_progress(core, core->last_saved);
}

static ota_err_t check_image(void *user, const ota_image_info_t *image)
{
    ota_core_t *core = user;
    ota_app_info_t running;
    ota_err_t err = core->plat->running_app(core->ctx, &running);
    if (err != OTA_OK) {
        return err;
    }
    char why[sizeof core->last_error - 8];
    bool newer_build = core->offered_build >= 0 && core->cfg.build_number >= 0 &&
                       core->offered_build > core->cfg.build_number;
    bool version_order = false;
    if (ota_image_fits(&running, image, newer_build, core->offered_downgrade, why, sizeof why, &version_order) !=
        OTA_OK) {
        core->refused_for_version = version_order;
        fail_because(core, "image: %s", why);
        return OTA_ERR_IMAGE;
    }
    if (core->offered_downgrade) {
        logf_(core, 2, "image %s for %s fits as a downgrade from %s; writing it", image->version, image->project_name,
              running.version);
    } else {
        logf_(core, 2, "image %s for %s fits; writing it", image->version, image->project_name);
    }
    return OTA_OK;
}

static ota_err_t verify_hash(ota_core_t *core)
{
    uint8_t *chunk = malloc(READ_BACK_CHUNK);
    if (chunk == NULL) {
        return OTA_ERR_NO_MEM;
    }
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    ota_err_t err = OTA_OK;
    for (uint64_t offset = 0; offset < core->attempt.file_size && err == OTA_OK; offset += READ_BACK_CHUNK) {
        uint64_t left = core->attempt.file_size - offset;
        size_t len = left < READ_BACK_CHUNK ? (size_t)left : READ_BACK_CHUNK;
        err = core->plat->read_update(core->ctx, offset, chunk, len);
        if (err == OTA_OK) {
            ota_sha256_update(&sha, chunk, len);
        }
    }
    free(chunk);
    if (err != OTA_OK) {
        fail_because(core, "flash: could not read the update slot back (%d)", err);
        return OTA_ERR_FLASH;
    }
    uint8_t digest[32];
    ota_sha256_finish(&sha, digest);
    if (memcmp(digest, core->attempt.file_hash, sizeof digest) != 0) {
        char got[17];
        for (int i = 0; i < 8; i++) {
            snprintf(got + 2 * i, 3, "%02x", digest[i]);
        }
        fail_because(core, "hash_mismatch: the downloaded image's SHA-256 starts %s, not what the server announced",
                     got);
        return OTA_ERR_HASH;
    }
    return OTA_OK;
}

/* Ends an install that cannot go on: nothing of it will boot, and the
 * server hears why. */
static ota_err_t give_up(ota_core_t *core, int64_t firmware_id, ota_err_t err)
{
    core->plat->abort_update(core->ctx);
    if (err == OTA_ERR_IMAGE && core->refused_for_version) {
        /* It will not fit while this version runs and the offer is the same. */
        remember_unfit(core, firmware_id, core->attempt.file_hash, core->offered_downgrade);
    } else if (err == OTA_ERR_IMAGE) {
        /* It will not fit next time either. */
        remember_bad(core, firmware_id, core->attempt.file_hash);
    }
    clear_attempt(core);
    if (core->last_error[0] == '\0') {
        snprintf(core->last_error, sizeof core->last_error, "download: failed (%d)", err);
    }
    ota_core_report(core, firmware_id, OTA_STATUS_FAILED, -1, core->last_error);
    return err;
}

/* Whether url is on the configured server: server_url itself, then the
 * end, a path or a query (so "https://ota.example.com.evil" is not). */
static bool on_server(const char *server_url, const char *url)
{
    size_t n = server_url != NULL ? strlen(server_url) : 0;
    while (n > 0 && server_url[n - 1] == '/') {
        n--;
    }
    return n > 0 && strncmp(url, server_url, n) == 0 && (url[n] == '\0' || url[n] == '/' || url[n] == '?');
}

/* The device's token goes to the server alone. A signed link
 * (…?expires=…&sig=…) needs none, and leaving it out keeps the token away
 * from a bucket the link redirects to; a link elsewhere (a CDN's, with
 * OTA_CDN_BASE_URL) must never see it. */
static const char *download_bearer(const ota_core_t *core, const char *url)
{
    const char *query = strchr(url, '?');
    bool signed_link = query != NULL && (strstr(query, "?sig=") != NULL || strstr(query, "&sig=") != NULL);
    return signed_link || !on_server(core->cfg.server_url, url) ? NULL : core->cfg.device_token;
}

static bool same_firmware(const ota_attempt_t *a, const ota_update_t *u)
{
    return a->stage == OTA_STAGE_DOWNLOADING && a->firmware_id == u->firmware_id && a->file_size == u->file_size &&
           memcmp(a->file_hash, u->file_hash, sizeof a->file_hash) == 0;
}

static void start_attempt(ota_core_t *core, const ota_update_t *u, const ota_app_info_t *running)
{
    memset(&core->attempt, 0, sizeof core->attempt);
    core->attempt.magic = OTA_ATTEMPT_MAGIC;
    core->attempt.layout = OTA_ATTEMPT_LAYOUT;
    core->attempt.stage = OTA_STAGE_DOWNLOADING;
    core->attempt.firmware_id = u->firmware_id;
    core->attempt.log_id = u->log_id;
    core->attempt.file_size = u->file_size;
    memcpy(core->attempt.file_hash, u->file_hash, sizeof u->file_hash);
    snprintf(core->attempt.version, sizeof core->attempt.version, "%s", u->version);
    snprintf(core->attempt.from_version, sizeof core->attempt.from_version, "%s", running->version);
    /* Saved now, so an older record cannot be resumed over these bytes. */
    save_attempt(core);
}

ota_err_t ota_core_install(ota_core_t *core, const ota_update_t *u)
{
    if (u == NULL || !u->update_available || u->file_size == 0) {
        return OTA_ERR_ARG;
    }
    if (core->plat->boot_state(core->ctx) == OTA_BOOT_PENDING_VERIFY) {
        logf_(core, 1, "the running app is not confirmed yet; no new update can start");
        return OTA_ERR_STATE;
    }
    if (core->attempt.stage == OTA_STAGE_ACTIVATING || core->attempt.stage == OTA_STAGE_ACTIVATED) {
        logf_(core, 1, "%s is activated; restart before installing anything else", core->attempt.version);
        return OTA_ERR_STATE;
    }
    if (refused_before(core, u)) {
        fail_because(core, "firmware %lld (%s) rolled back or was refused on this device before",
                     (long long)u->firmware_id, u->version);
        return OTA_ERR_STATE;
    }
    if (core->attempt.stage == OTA_STAGE_CONFIRMED || core->attempt.stage == OTA_STAGE_ROLLED_BACK) {
        ota_err_t err = settle(core);
        if (err != OTA_OK) {
            return err;
        }
    }
    ota_app_info_t running;
    ota_err_t err = core->plat->running_app(core->ctx, &running);
    if (err != OTA_OK) {
        return err;
    }
    core->last_error[0] = '\0';
    core->last_progress = -1;
    core->offered_build = u->build_number;
    core->offered_downgrade = u->is_downgrade;
    core->refused_for_version = false;
    if (same_firmware(&core->attempt, u)) {
        logf_(core, 2, "resuming %s at byte %llu of %llu", u->version, (unsigned long long)core->attempt.bytes_written,
              (unsigned long long)u->file_size);
    } else {
        if (core->attempt.stage != OTA_STAGE_NONE) {
            logf_(core, 1, "dropping the unfinished download of %s for %s", core->attempt.version, u->version);
            core->plat->abort_update(core->ctx);
        }
        start_attempt(core, u, &running);
    }
    /* pending -> downloading, at the progress a resumed download starts from */
    report_progress(core, core->attempt.bytes_written);

    for (uint8_t attempt = 1;; attempt++) {
        ota_download_t download = {
            .url = u->download_url,
            .bearer = download_bearer(core, u->download_url),
            .ca_cert_pem = core->cfg.ca_cert_pem,
            .file_size = u->file_size,
            .resume_from = core->attempt.bytes_written,
            .piece_size = core->cfg.piece_size,
            .check_image = check_image,
            .on_written = on_written,
            .user = core,
        };
        uint64_t written = download.resume_from;
        err = core->plat->download(core->ctx, &download, &written);
        if (err == OTA_OK) {
            core->attempt.http_refusals = 0;
            on_written(core, u->file_size);
            break;
        }
        if (written > core->attempt.bytes_written) {
            core->attempt.bytes_written = written > u->file_size ? u->file_size : written;
            core->attempt.http_refusals = 0;
        }
        if (err == OTA_ERR_HTTP && core->attempt.http_refusals < 2) {
            /* An expired link (403) or a build withdrawn meanwhile (404): keep
             * what is in the slot. The next poll asks for a fresh link and
             * resumes, or drops the download if the build is no longer offered. */
            core->attempt.http_refusals++;
            save_attempt(core);
            logf_(core, 1, "the server refused the download; asking again on the next poll");
            return err;
        }
        save_attempt(core);
        if (err == OTA_ERR_HTTP) {
            fail_because(core, "download: the server refused the download of a build it offers, 3 times in a row");
            return give_up(core, u->firmware_id, err);
        }
        if (err != OTA_ERR_IO) {
            if (core->last_error[0] == '\0' && err == OTA_ERR_IMAGE) {
                fail_because(core, "image: the first bytes are not an ESP-IDF app image with an app descriptor");
            } else if (core->last_error[0] == '\0') {
                fail_because(core, "download: failed (%d)", err);
            }
            return give_up(core, u->firmware_id, err);
        }
        if (attempt >= core->cfg.max_attempts) {
            logf_(core, 1, "download cut %u times; resuming at byte %llu on the next poll", attempt,
                  (unsigned long long)core->attempt.bytes_written);
            return OTA_ERR_IO;
        }
        uint32_t delay = ota_backoff_ms(attempt, core->cfg.retry_base_ms, core->cfg.retry_max_ms,
                                        core->plat->random32(core->ctx));
        logf_(core, 1, "download cut at byte %llu; retrying in %u ms", (unsigned long long)core->attempt.bytes_written,
              (unsigned)delay);
        core->plat->sleep_ms(core->ctx, delay);
    }

    err = verify_hash(core);
    if (err != OTA_OK) {
        return give_up(core, u->firmware_id, err);
    }
    ota_core_report(core, u->firmware_id, OTA_STATUS_INSTALLING, 100, NULL);
    core->attempt.stage = OTA_STAGE_ACTIVATING;
    core->attempt.target_slot = core->plat->update_slot_id(core->ctx);
    save_attempt(core);
    err = core->plat->activate_update(core->ctx, u->file_size);
    if (err != OTA_OK) {
        fail_because(core, "activate: the downloaded image was refused by the platform (%d)", err);
        return give_up(core, u->firmware_id, err);
    }
    core->attempt.stage = OTA_STAGE_ACTIVATED;
    save_attempt(core);
    logf_(core, 2, "%s is activated; restart to run it", u->version);
    return OTA_OK;
}

/* ---- polling ----------------------------------------------------------- */

ota_err_t ota_core_poll(ota_core_t *core, bool *reboot)
{
    *reboot = false;
    if (core->attempt.stage == OTA_STAGE_CONFIRMED || core->attempt.stage == OTA_STAGE_ROLLED_BACK) {
        ota_err_t err = settle(core);
        if (err != OTA_OK) {
            return err;
        }
    }
    if (core->attempt.stage == OTA_STAGE_ACTIVATED || core->attempt.stage == OTA_STAGE_ACTIVATING) {
        /* Activated but not rebooted yet (the app postponed it). */
        *reboot = true;
        return OTA_OK;
    }
    ota_update_t update;
    ota_err_t err = ota_core_check(core, &update);
    if (err != OTA_OK) {
        return err;
    }
    if (!update.update_available) {
        if (core->attempt.stage == OTA_STAGE_DOWNLOADING) {
            logf_(core, 1, "%s is no longer offered; dropping its unfinished download", core->attempt.version);
            core->plat->abort_update(core->ctx);
            clear_attempt(core);
        }
        return OTA_OK;
    }
    if (refused_before(core, &update)) {
        logf_(core, 1, "not retrying firmware %lld (%s): it rolled back or was refused on this device",
              (long long)update.firmware_id, update.version);
        return OTA_OK;
    }
    if (update.is_downgrade) {
        logf_(core, 2, "firmware %lld (%s) is offered as a downgrade (a pin or a recall)",
              (long long)update.firmware_id, update.version);
    }
    err = ota_core_install(core, &update);
    *reboot = err == OTA_OK;
    return err;
}

uint32_t ota_backoff_ms(uint32_t failures, uint32_t base_ms, uint32_t max_ms, uint32_t random)
{
    uint64_t delay = base_ms;
    for (uint32_t i = 1; i < failures && delay < max_ms; i++) {
        delay *= 2;
    }
    if (delay > max_ms) {
        delay = max_ms;
    }
    /* "Equal jitter": half fixed, half random, so a fleet that failed
     * together does not retry together, and no retry comes at once. */
    uint64_t half = delay / 2;
    return (uint32_t)(half + (half == 0 ? 0 : random % (half + 1)));
}

uint32_t ota_core_next_delay_ms(ota_core_t *core, ota_err_t last, uint32_t interval_ms)
{
    uint32_t random = core->plat->random32(core->ctx);
    if (last == OTA_OK) {
        core->failures = 0;
        uint32_t spread = interval_ms / 5;
        return interval_ms - interval_ms / 10 + (spread == 0 ? 0 : random % (spread + 1));
    }
    if (core->failures < UINT32_MAX) {
        core->failures++;
    }
    uint32_t max = core->cfg.retry_max_ms < interval_ms ? core->cfg.retry_max_ms : interval_ms;
    return ota_backoff_ms(core->failures, core->cfg.retry_base_ms, max, random);
}
