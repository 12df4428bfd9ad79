/* test_core.c: unit tests of the portable core's pure parts (SHA-256,
 * versions, image heads, the JSON bodies, backoff), and of what it
 * remembers about firmware against a fake device, run by `make test` under
 * ASan and UBSan. The state machine is tested end to end against the real
 * server (crates/ota-server/tests/api/esp_idf_client.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_core.h"
#include "ota_sha256.h"

static int failed_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failed_checks++;                                                         \
        }                                                                            \
    } while (0)

static void hex(const uint8_t *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    }
}

static void sha256_matches_the_fips_vectors(void)
{
    static const struct {
        const char *input;
        const char *digest;
    } vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        ota_sha256_t sha;
        uint8_t digest[32];
        char text[65];
        ota_sha256_init(&sha);
        ota_sha256_update(&sha, vectors[i].input, strlen(vectors[i].input));
        ota_sha256_finish(&sha, digest);
        hex(digest, 32, text);
        CHECK(strcmp(text, vectors[i].digest) == 0);
    }
    /* A million 'a's fed in uneven pieces. */
    ota_sha256_t sha;
    uint8_t digest[32];
    char text[65];
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    ota_sha256_init(&sha);
    size_t left = 1000000;
    while (left > 0) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        ota_sha256_update(&sha, chunk, n);
        left -= n;
    }
    ota_sha256_finish(&sha, digest);
    hex(digest, 32, text);
    CHECK(strcmp(text, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

static int cmp(const char *a, const char *b)
{
    bool ok;
    int c = ota_version_compare(a, b, &ok);
    return ok ? c : 99;
}

/* Every line of the shared vectors file (see its header). */
static void versions_order_as_the_server_orders_them(const char *vectors)
{
    FILE *f = fopen(vectors, "r");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    char line[256];
    int checked = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        checked++;
        if (line[0] == '!') {
            const char *text = line[1] == ' ' ? line + 2 : line + 1;
            if (cmp(text, "1.0.0") != 99) {
                fprintf(stderr, "read as a version, but the server refuses it: '%s'\n", text);
                failed_checks++;
            }
            continue;
        }
        char a[128], op[4], b[128];
        CHECK(sscanf(line, "%127s %3s %127s", a, op, b) == 3);
        int want = op[0] == '<' ? -1 : op[0] == '>' ? 1 : 0;
        int got = cmp(a, b), back = cmp(b, a);
        if (got != want || back != -want) {
            fprintf(stderr, "%s: got %d and %d\n", line, got, back);
            failed_checks++;
        }
    }
    fclose(f);
    CHECK(checked > 40);
}

/* A made-up image head: header, segment header, app descriptor. */
static void make_head(uint8_t *buf, uint16_t chip, const char *version, const char *project, uint32_t secure)
{
    memset(buf, 0, OTA_IMAGE_HEAD_LEN);
    buf[0] = 0xE9;
    buf[1] = 3;
    buf[0x0C] = (uint8_t)chip;
    buf[0x0F] = 100;
    buf[0x11] = 199;
    const uint8_t magic[4] = {0x32, 0x54, 0xCD, 0xAB};
    memcpy(buf + 0x20, magic, 4);
    buf[0x24] = (uint8_t)secure;
    memcpy(buf + 0x30, version, strlen(version));
    memcpy(buf + 0x50, project, strlen(project));
}

/* ota_image_fits with a 160-byte reason and no version_order. */
static ota_err_t fits(const ota_app_info_t *running, const ota_image_info_t *image, bool newer_build, bool downgrade,
                      char why[160])
{
    return ota_image_fits(running, image, newer_build, downgrade, why, 160, NULL);
}

static void image_heads_are_read_and_judged(void)
{
    uint8_t buf[OTA_IMAGE_HEAD_LEN];
    ota_image_info_t info;
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_OK);
    CHECK(info.chip_id == 18 && info.min_chip_rev == 100 && info.max_chip_rev == 199);
    CHECK(info.secure_version == 2);
    CHECK(strcmp(info.version, "1.1.0") == 0 && strcmp(info.project_name, "scales_bridge") == 0);
    CHECK(ota_image_read_head(buf, sizeof buf - 1, &info) == OTA_ERR_IMAGE);
    buf[0] = 0xEA;
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_ERR_IMAGE);
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    buf[0x20] = 0;
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_ERR_IMAGE);
    /* A 32-byte field without its NUL is read whole, never past its end. */
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    memset(buf + 0x50, 'p', 32);
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_OK && strlen(info.project_name) == 32);

    ota_app_info_t running = {.version = "1.0.0", .project_name = "scales_bridge", .chip_id = 18, .secure_version = 2};
    char why[160];
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    ota_image_read_head(buf, sizeof buf, &info);
    CHECK(fits(&running, &info, false, false, why) == OTA_OK);
    info.chip_id = 13;
    CHECK(fits(&running, &info, false, false, why) == OTA_ERR_IMAGE && strstr(why, "chip id 13"));
    info.chip_checked_by_platform = true;
    CHECK(fits(&running, &info, false, false, why) == OTA_OK);
    info.chip_id = 18;
    strcpy(info.project_name, "other");
    CHECK(fits(&running, &info, false, false, why) == OTA_ERR_IMAGE && strstr(why, "project"));
    strcpy(info.project_name, "scales_bridge");
    strcpy(info.version, "1.0.0");
    CHECK(fits(&running, &info, false, false, why) == OTA_ERR_IMAGE && strstr(why, "not newer"));
    /* The same version is taken when the offer's build number is higher. */
    CHECK(fits(&running, &info, true, false, why) == OTA_OK);
    strcpy(info.version, "0.9.0");
    CHECK(fits(&running, &info, true, false, why) == OTA_ERR_IMAGE);
    strcpy(info.version, "v1.0.0-dirty");
    CHECK(fits(&running, &info, false, false, why) == OTA_ERR_IMAGE);
    strcpy(info.version, "v1.0.0-1-g1234abc");
    CHECK(fits(&running, &info, false, false, why) == OTA_OK);
    strcpy(info.version, "1.1.0");
    info.secure_version = 1;
    CHECK(fits(&running, &info, false, false, why) == OTA_ERR_IMAGE && strstr(why, "anti-rollback"));
}

/* With is_downgrade, the version must be strictly older than the running
 * one; without it, newer (or the same with a newer build). Every other
 * check stays. */
static void downgrades_fit_only_when_the_offer_says_so(void)
{
    uint8_t buf[OTA_IMAGE_HEAD_LEN];
    ota_image_info_t info;
    ota_app_info_t running = {.version = "1.1.0", .project_name = "scales_bridge", .chip_id = 18, .secure_version = 2};
    char why[160];
    bool order = false;
    make_head(buf, 18, "1.0.0", "scales_bridge", 2);
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_OK);

    /* An older version: refused without is_downgrade (for its order alone),
     * whatever the build number; taken with it. */
    CHECK(ota_image_fits(&running, &info, false, false, why, sizeof why, &order) == OTA_ERR_IMAGE && order &&
          strstr(why, "not newer"));
    CHECK(fits(&running, &info, true, false, why) == OTA_ERR_IMAGE);
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_OK && !order);
    CHECK(fits(&running, &info, true, true, why) == OTA_OK);
    strcpy(info.version, "v1.1.0-rc.1");
    CHECK(fits(&running, &info, false, true, why) == OTA_OK);
    strcpy(info.version, "0.1");
    CHECK(fits(&running, &info, false, true, why) == OTA_OK);

    /* The same version is not a downgrade, not even with a newer build
     * number, and neither is build metadata; nor a newer version. */
    strcpy(info.version, "1.1.0");
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && order &&
          strstr(why, "not older"));
    CHECK(fits(&running, &info, true, true, why) == OTA_ERR_IMAGE && strstr(why, "not older"));
    strcpy(info.version, "v1.1.0+rebuilt");
    CHECK(fits(&running, &info, false, true, why) == OTA_ERR_IMAGE && strstr(why, "not older"));
    strcpy(info.version, "1.2.0");
    CHECK(fits(&running, &info, false, true, why) == OTA_ERR_IMAGE && strstr(why, "not older"));
    CHECK(fits(&running, &info, false, false, why) == OTA_OK);

    /* Anti-rollback holds for a downgrade: a lower secure_version is
     * refused, and not for its version order (it never fits here again). */
    strcpy(info.version, "1.0.0");
    info.secure_version = 1;
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && !order &&
          strstr(why, "anti-rollback"));
    strcpy(info.version, "1.1.0");
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && !order &&
          strstr(why, "anti-rollback"));
    strcpy(info.version, "1.0.0");
    info.secure_version = 2;
    CHECK(fits(&running, &info, false, true, why) == OTA_OK);
    info.secure_version = 3;
    CHECK(fits(&running, &info, false, true, why) == OTA_OK);

    /* So do the chip, the project and a readable version. */
    info.chip_id = 13;
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && !order &&
          strstr(why, "chip id 13"));
    info.chip_id = 18;
    strcpy(info.project_name, "other");
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && !order &&
          strstr(why, "project"));
    strcpy(info.project_name, "scales_bridge");
    strcpy(info.version, "1.0.0-01");
    CHECK(ota_image_fits(&running, &info, false, true, why, sizeof why, &order) == OTA_ERR_IMAGE && !order &&
          strstr(why, "cannot compare"));

    /* The longest versions still leave the reason readable. */
    strcpy(running.version, "1.1.0-alpha.beta.gamma.delta.eps");
    strcpy(info.version, "1.2.0-alpha.beta.gamma.delta.eps");
    CHECK(strlen(running.version) == 32 && strlen(info.version) == 32);
    CHECK(fits(&running, &info, false, true, why) == OTA_ERR_IMAGE && strstr(why, "downgrade") &&
          strlen(why) < 160 - strlen("image: "));
}

static void check_answers_are_parsed_strictly(void)
{
    ota_update_t u;
    const char *offer =
        "{\"update_available\":true,\"firmware_id\":12,\"version\":\"1.1.0\",\"build_number\":7,"
        "\"file_size\":1523456,\"file_hash\":\"00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\","
        "\"download_url\":\"http://h/api/ota/download/12?expires=1&sig=x\",\"release_notes\":null,"
        "\"is_mandatory\":true,\"log_id\":991}";
    CHECK(ota_parse_check_answer(offer, &u) == OTA_OK);
    CHECK(u.update_available && u.firmware_id == 12 && u.build_number == 7 && u.log_id == 991);
    CHECK(u.file_size == 1523456 && u.is_mandatory && strcmp(u.version, "1.1.0") == 0);
    CHECK(u.file_hash[0] == 0x00 && u.file_hash[5] == 0x55 && u.file_hash[31] == 0xFF);
    CHECK(strcmp(u.download_url, "http://h/api/ota/download/12?expires=1&sig=x") == 0);

    CHECK(ota_parse_check_answer("{\"update_available\":false,\"current_version\":\"1.0.0\"}", &u) == OTA_OK);
    CHECK(!u.update_available);

    /* is_downgrade: absent (older servers) is false; present, a boolean. */
    CHECK(ota_parse_check_answer(offer, &u) == OTA_OK && !u.is_downgrade);
    char with[1024];
    size_t body = strlen(offer) - 1; /* before the closing brace */
    static const struct {
        const char *member;
        int parsed; /* 1 true, 0 false, -1 refused */
    } downgrade[] = {
        {"true", 1}, {"false", 0}, {"\"true\"", -1}, {"1", -1}, {"0", -1}, {"null", -1}, {"{}", -1}, {"[true]", -1},
    };
    for (size_t i = 0; i < sizeof downgrade / sizeof downgrade[0]; i++) {
        snprintf(with, sizeof with, "%.*s,\"is_downgrade\":%s}", (int)body, offer, downgrade[i].member);
        ota_err_t err = ota_parse_check_answer(with, &u);
        if (downgrade[i].parsed < 0) {
            CHECK(err == OTA_ERR_PROTOCOL);
        } else {
            CHECK(err == OTA_OK && u.update_available && u.firmware_id == 12 &&
                  u.is_downgrade == (downgrade[i].parsed == 1));
        }
    }

    static const char *broken[] = {
        "", "[]", "{}", "{\"update_available\":\"yes\"}", "{\"update_available\":true}",
        "{\"update_available\":true,\"firmware_id\":-1,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1.5,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"0011\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"1\",\"file_size\":0,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"0123456789012345678901234567890123456789012345678901234567890123456789\","
        "\"file_size\":1,\"file_hash\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
        "\"download_url\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        CHECK(ota_parse_check_answer(broken[i], &u) == OTA_ERR_PROTOCOL);
    }
    CHECK(ota_parse_check_answer(NULL, &u) == OTA_ERR_PROTOCOL);
}

/* ---- a fake device, for what the core remembers about firmware -------- */

#define FAKE_KEYS 6

typedef struct {
    ota_app_info_t running;
    ota_image_info_t image;  /* what the offered image's head says */
    char check_answer[1024];
    char last_status[512];   /* the last POST /api/ota/status body */
    int downloads;
    char download_bearer[32]; /* the last download's bearer, "" for none */
    bool activated;
    uint8_t payload[100];    /* the offered image's bytes */
    struct {
        char key[16];
        uint8_t value[512];
        size_t len;
    } kv[FAKE_KEYS];
} fake_t;

static char *copy_text(const char *text)
{
    char *copy = malloc(strlen(text) + 1);
    if (copy != NULL) {
        strcpy(copy, text);
    }
    return copy;
}

static ota_err_t fake_post(void *ctx, const char *url, const char *bearer, const char *ca, const char *body,
                           int *status, char **answer)
{
    fake_t *f = ctx;
    (void)bearer;
    (void)ca;
    *status = 200;
    if (strstr(url, "/api/ota/check") != NULL) {
        *answer = copy_text(f->check_answer);
    } else {
        snprintf(f->last_status, sizeof f->last_status, "%s", body);
        *answer = copy_text("{}");
    }
    return *answer != NULL ? OTA_OK : OTA_ERR_NO_MEM;
}

static ota_err_t fake_download(void *ctx, const ota_download_t *d, uint64_t *written)
{
    fake_t *f = ctx;
    f->downloads++;
    snprintf(f->download_bearer, sizeof f->download_bearer, "%s", d->bearer != NULL ? d->bearer : "");
    if (d->resume_from == 0) {
        ota_err_t err = d->check_image(d->user, &f->image);
        if (err != OTA_OK) {
            return err;
        }
    }
    d->on_written(d->user, d->file_size);
    *written = d->file_size;
    return OTA_OK;
}

static ota_err_t fake_read_update(void *ctx, uint64_t offset, uint8_t *buf, size_t len)
{
    fake_t *f = ctx;
    if (offset + len > sizeof f->payload) {
        return OTA_ERR_FLASH;
    }
    memcpy(buf, f->payload + offset, len);
    return OTA_OK;
}

static ota_err_t fake_activate(void *ctx, uint64_t size)
{
    fake_t *f = ctx;
    (void)size;
    f->activated = true;
    return OTA_OK;
}

static void fake_nothing(void *ctx) { (void)ctx; }
static uint32_t fake_update_slot(void *ctx) { (void)ctx; return 1; }
static uint32_t fake_running_slot(void *ctx) { (void)ctx; return 0; }
static ota_boot_state_t fake_boot_state(void *ctx) { (void)ctx; return OTA_BOOT_NORMAL; }
static ota_err_t fake_ok(void *ctx) { (void)ctx; return OTA_OK; }
static uint64_t fake_now(void *ctx) { (void)ctx; return 0; }
static void fake_sleep(void *ctx, uint32_t ms) { (void)ctx; (void)ms; }
static uint32_t fake_random(void *ctx) { (void)ctx; return 0; }

static ota_err_t fake_running_app(void *ctx, ota_app_info_t *out)
{
    *out = ((fake_t *)ctx)->running;
    return OTA_OK;
}

static int fake_key(fake_t *f, const char *key)
{
    for (int i = 0; i < FAKE_KEYS; i++) {
        if (strcmp(f->kv[i].key, key) == 0) {
            return i;
        }
    }
    return -1;
}

static ota_err_t fake_kv_get(void *ctx, const char *key, void *buf, size_t *len)
{
    fake_t *f = ctx;
    int i = fake_key(f, key);
    if (i < 0) {
        return OTA_ERR_NOT_FOUND;
    }
    if (f->kv[i].len > *len) {
        *len = f->kv[i].len;
        return OTA_ERR_ARG;
    }
    memcpy(buf, f->kv[i].value, f->kv[i].len);
    *len = f->kv[i].len;
    return OTA_OK;
}

static ota_err_t fake_kv_set(void *ctx, const char *key, const void *buf, size_t len)
{
    fake_t *f = ctx;
    int i = fake_key(f, key);
    if (i < 0) {
        i = fake_key(f, "");
    }
    if (i < 0 || len > sizeof f->kv[i].value || strlen(key) >= sizeof f->kv[i].key) {
        return OTA_ERR_NO_MEM;
    }
    strcpy(f->kv[i].key, key);
    memcpy(f->kv[i].value, buf, len);
    f->kv[i].len = len;
    return OTA_OK;
}

static ota_err_t fake_kv_erase(void *ctx, const char *key)
{
    fake_t *f = ctx;
    int i = fake_key(f, key);
    if (i < 0) {
        return OTA_ERR_NOT_FOUND;
    }
    memset(&f->kv[i], 0, sizeof f->kv[i]);
    return OTA_OK;
}

static const ota_platform_t fake_platform = {
    .http_post_json = fake_post,
    .download = fake_download,
    .read_update = fake_read_update,
    .activate_update = fake_activate,
    .abort_update = fake_nothing,
    .update_slot_id = fake_update_slot,
    .running_slot_id = fake_running_slot,
    .running_app = fake_running_app,
    .boot_state = fake_boot_state,
    .mark_valid = fake_ok,
    .rollback_and_reboot = fake_ok,
    .reboot = fake_nothing,
    .kv_get = fake_kv_get,
    .kv_set = fake_kv_set,
    .kv_erase = fake_kv_erase,
    .now_ms = fake_now,
    .sleep_ms = fake_sleep,
    .random32 = fake_random,
};

/* A device running `running` (secure_version 2), offered firmware `id`:
 * an image of `version` with `secure`, announced with `downgrade` (NULL:
 * no is_downgrade member). Its bytes, and so its hash, follow from `id`. */
static void fake_offer(fake_t *f, int64_t id, const char *version, uint32_t secure, const char *downgrade)
{
    f->image = (ota_image_info_t){.chip_id = 18, .secure_version = secure};
    strcpy(f->image.version, version);
    strcpy(f->image.project_name, "scales_bridge");
    memset(f->payload, (int)id, sizeof f->payload);
    uint8_t digest[32];
    char hash[65];
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    ota_sha256_update(&sha, f->payload, sizeof f->payload);
    ota_sha256_finish(&sha, digest);
    hex(digest, 32, hash);
    char member[64] = "";
    if (downgrade != NULL) {
        snprintf(member, sizeof member, ",\"is_downgrade\":%s", downgrade);
    }
    snprintf(f->check_answer, sizeof f->check_answer,
             "{\"update_available\":true,\"firmware_id\":%lld,\"version\":\"%s\",\"file_size\":%u,"
             "\"file_hash\":\"%s\",\"download_url\":\"http://h/api/ota/download/%lld\",\"is_mandatory\":false,"
             "\"log_id\":1%s}",
             (long long)id, version, (unsigned)sizeof f->payload, hash, (long long)id, member);
    f->downloads = 0;
    f->activated = false;
    f->last_status[0] = '\0';
}

static void fake_runs(fake_t *f, const char *version)
{
    f->running = (ota_app_info_t){.project_name = "scales_bridge", .chip_id = 18, .secure_version = 2};
    strcpy(f->running.version, version);
}

/* The firmware whose bytes fake_offer makes for `id`, stored as `key`. */
static void fake_remember(fake_t *f, const char *key, int64_t id)
{
    struct {
        int64_t firmware_id;
        uint8_t file_hash[32];
    } fw = {.firmware_id = id};
    uint8_t payload[sizeof f->payload];
    memset(payload, (int)id, sizeof payload);
    ota_sha256_t sha;
    ota_sha256_init(&sha);
    ota_sha256_update(&sha, payload, sizeof payload);
    ota_sha256_finish(&sha, fw.file_hash);
    CHECK(fake_kv_set(f, key, &fw, sizeof fw) == OTA_OK);
}

/* One boot and one poll (*reboot: the offer was activated). */
static ota_err_t fake_poll(fake_t *f, bool *reboot)
{
    ota_core_config_t cfg = {
        .server_url = "http://h", .device_token = "device-token", .device_type = "scales_bridge_tab5", .build_number = -1};
    ota_core_t core;
    CHECK(ota_core_init(&core, &cfg, &fake_platform, f) == OTA_OK);
    ota_boot_outcome_t outcome;
    CHECK(ota_core_on_boot(&core, &outcome) == OTA_OK);
    ota_err_t err = ota_core_poll(&core, reboot);
    CHECK(*reboot == f->activated);
    return err;
}

static bool failed_with(const fake_t *f, const char *prefix)
{
    char want[96];
    snprintf(want, sizeof want, "\"status\":\"failed\",\"error_message\":\"%s", prefix);
    return strstr(f->last_status, want) != NULL;
}

static void remembered_firmware_does_not_block_a_deliberate_downgrade(void)
{
    fake_t *f = calloc(1, sizeof *f);
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    bool reboot;

    /* 1.0.0 (firmware 1) was installed, then 1.1.0 (2); 2 is recalled and
     * 1 offered again as a downgrade: installed. */
    fake_runs(f, "1.1.0");
    fake_remember(f, OTA_RUNNING_KEY, 2);
    fake_offer(f, 1, "1.0.0", 2, "true");
    CHECK(fake_poll(f, &reboot) == OTA_OK && reboot && f->downloads == 1);

    /* The last firmware installed, 1.0.0, was replaced by 1.2.0 over USB;
     * a pin takes the device back to it. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.2.0");
    fake_remember(f, OTA_RUNNING_KEY, 1);
    fake_offer(f, 1, "1.0.0", 2, "true");
    CHECK(fake_poll(f, &reboot) == OTA_OK && reboot);
    /* Offered as an update, it is still not installed over itself. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.0.0");
    fake_remember(f, OTA_RUNNING_KEY, 1);
    fake_offer(f, 1, "1.0.0", 2, "false");
    CHECK(fake_poll(f, &reboot) == OTA_OK && !reboot && f->downloads == 0 && f->last_status[0] == '\0');

    /* Without is_downgrade (an older server), an older version is refused
     * and reported; not fetched again while 1.1.0 runs. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.1.0");
    fake_offer(f, 1, "1.0.0", 2, NULL);
    CHECK(fake_poll(f, &reboot) == OTA_ERR_IMAGE && !reboot &&
          failed_with(f, "image: the image's version 1.0.0 is not newer"));
    fake_offer(f, 1, "1.0.0", 2, NULL);
    CHECK(fake_poll(f, &reboot) == OTA_OK && !reboot && f->downloads == 0 && f->last_status[0] == '\0');
    /* That refusal was for the version order alone: offered as a
     * downgrade later, it is installed... */
    fake_offer(f, 1, "1.0.0", 2, "true");
    CHECK(fake_poll(f, &reboot) == OTA_OK && reboot);
    /* ...and so is it as an update to a device that went below it. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.1.0");
    fake_offer(f, 1, "1.0.0", 2, NULL);
    CHECK(fake_poll(f, &reboot) == OTA_ERR_IMAGE);
    fake_runs(f, "0.9.0");
    fake_offer(f, 1, "1.0.0", 2, NULL);
    CHECK(fake_poll(f, &reboot) == OTA_OK && reboot);

    /* A downgrade offer whose image is not older is refused and reported. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.1.0");
    fake_offer(f, 3, "1.1.0", 2, "true");
    CHECK(fake_poll(f, &reboot) == OTA_ERR_IMAGE && !reboot &&
          failed_with(f, "image: the image's version 1.1.0 is not older than the running 1.1.0"));

    /* A downgrade below the running secure_version is refused, reported,
     * and never fetched again, whatever runs later. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.1.0");
    fake_offer(f, 1, "1.0.0", 1, "true");
    CHECK(fake_poll(f, &reboot) == OTA_ERR_IMAGE && !reboot && failed_with(f, "image: the image's secure_version 1"));
    fake_runs(f, "1.2.0");
    fake_offer(f, 1, "1.0.0", 1, "true");
    CHECK(fake_poll(f, &reboot) == OTA_OK && !reboot && f->downloads == 0 && f->last_status[0] == '\0');

    /* A firmware that rolled back here is not installed again, not even
     * as a downgrade. */
    memset(f, 0, sizeof *f);
    fake_runs(f, "1.1.0");
    fake_remember(f, OTA_ROLLED_BACK_KEY, 1);
    fake_offer(f, 1, "1.0.0", 2, "true");
    CHECK(fake_poll(f, &reboot) == OTA_OK && !reboot && f->downloads == 0 && f->last_status[0] == '\0');
    free(f);
}

static void request_bodies_say_what_the_api_names(void)
{
    ota_core_config_t cfg = {.device_type = "scales_bridge_tab5", .channel = "beta", .build_number = 3};
    ota_app_info_t running = {.version = "1.0.0", .secure_version = 2};
    char *body = ota_build_check_request(&cfg, &running, true);
    CHECK(body != NULL && strcmp(body, "{\"device_type\":\"scales_bridge_tab5\",\"current_version\":\"1.0.0\","
                                       "\"secure_version\":2,\"build_number\":3,\"channel\":\"beta\"}") == 0);
    free(body);
    cfg.channel = NULL;
    cfg.build_number = -1;
    body = ota_build_check_request(&cfg, &running, false);
    CHECK(body != NULL && strstr(body, "channel") == NULL && strstr(body, "build_number") == NULL);
    CHECK(strstr(body, "secure_version") == NULL);
    free(body);

    body = ota_build_status_request(12, OTA_STATUS_DOWNLOADING, 40, NULL);
    CHECK(body != NULL && strcmp(body, "{\"firmware_id\":12,\"status\":\"downloading\",\"progress\":40}") == 0);
    free(body);
    body = ota_build_status_request(12, OTA_STATUS_FAILED, -1, "rollback: \"1.0.0\" runs again");
    CHECK(body != NULL &&
          strcmp(body, "{\"firmware_id\":12,\"status\":\"failed\",\"error_message\":\"rollback: \\\"1.0.0\\\" runs "
                       "again\"}") == 0);
    free(body);
}

static void backoff_doubles_up_to_its_cap_with_jitter(void)
{
    /* Equal jitter: between half and all of base * 2^(n-1), capped. */
    for (uint32_t failures = 1; failures <= 40; failures++) {
        uint64_t full = 1000;
        for (uint32_t i = 1; i < failures && full < 60000; i++) {
            full *= 2;
        }
        if (full > 60000) {
            full = 60000;
        }
        uint32_t low = ota_backoff_ms(failures, 1000, 60000, 0);
        uint32_t high = ota_backoff_ms(failures, 1000, 60000, UINT32_MAX);
        CHECK(low == full / 2);
        CHECK(high >= low && high <= full);
    }
    CHECK(ota_backoff_ms(1, 1000, 60000, 123) != ota_backoff_ms(1, 1000, 60000, 124));
}

/* The offer of fake_offer, with its download_url replaced by url. */
static void fake_offer_at(fake_t *f, const char *url)
{
    fake_offer(f, 1, "1.2.0", 2, NULL);
    const char *from = "http://h/api/ota/download/1";
    char *at = strstr(f->check_answer, from);
    CHECK(at != NULL);
    if (at == NULL) {
        return;
    }
    char rest[sizeof f->check_answer];
    snprintf(rest, sizeof rest, "%s", at + strlen(from));
    snprintf(at, sizeof f->check_answer - (size_t)(at - f->check_answer), "%s%s", url, rest);
}

static void the_device_token_goes_to_the_server_alone(void)
{
    static const struct {
        const char *url;
        const char *bearer;
    } cases[] = {
        {"http://h/api/ota/download/1", "device-token"},
        {"http://h/api/ota/download/1?device=d&expires=9&sig=abc", ""},
        {"https://cdn.example.com/scales_bridge_tab5/v1.2.0.bin", ""},
        {"http://h.example.com/api/ota/download/1", ""},
        {"http://hx/api/ota/download/1", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_t *f = calloc(1, sizeof *f);
        CHECK(f != NULL);
        if (f == NULL) {
            return;
        }
        bool reboot;
        fake_runs(f, "1.1.0");
        fake_offer_at(f, cases[i].url);
        CHECK(fake_poll(f, &reboot) == OTA_OK && f->downloads == 1);
        if (strcmp(f->download_bearer, cases[i].bearer) != 0) {
            fprintf(stderr, "%s: bearer '%s', want '%s'\n", cases[i].url, f->download_bearer, cases[i].bearer);
            failed_checks++;
        }
        free(f);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_core VERSION_VECTORS_FILE\n");
        return 2;
    }
    sha256_matches_the_fips_vectors();
    versions_order_as_the_server_orders_them(argv[1]);
    image_heads_are_read_and_judged();
    downgrades_fit_only_when_the_offer_says_so();
    check_answers_are_parsed_strictly();
    remembered_firmware_does_not_block_a_deliberate_downgrade();
    the_device_token_goes_to_the_server_alone();
    request_bodies_say_what_the_api_names();
    backoff_doubles_up_to_its_cap_with_jitter();
    if (failed_checks > 0) {
        fprintf(stderr, "%d check(s) failed\n", failed_checks);
        return 1;
    }
    printf("test_core: all checks passed\n");
    return 0;
}
