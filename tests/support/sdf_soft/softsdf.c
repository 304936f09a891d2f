/* A small software GM/T 0018 SDF library for tests: SM2 keys in PEM files, OpenSSL libcrypto.
 *
 * SOFTSDF_KEYS="INDEX|/path/key.pem|password;INDEX|..." maps key indexes to key files and
 * their access passwords. SOFTSDF_SM2_1 (hex or decimal) is the SGD_SM2_1 id it accepts
 * (default 0x00020100); SDF_GenerateKeyPair_ECC takes it or SGD_SM2_3 (0x00020400 / 0x00020800)
 * and counts the pairs it made (SOFTSDF_KeyPairsGenerated, for the tests). Structures as GmSSL sdf.h (ECCref_MAX_LEN 64, pack(1), right-aligned).
 * Build: gcc -shared -fPIC -o libsoftsdf.so softsdf.c -lcrypto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ec.h>
#include <openssl/core_names.h>
#include <openssl/err.h>

#define ECCref_MAX_LEN 64
#pragma pack(1)
typedef struct { unsigned int bits; unsigned char x[ECCref_MAX_LEN]; unsigned char y[ECCref_MAX_LEN]; } ECCrefPublicKey;
typedef struct { unsigned int bits; unsigned char K[ECCref_MAX_LEN]; } ECCrefPrivateKey;
typedef struct { unsigned char r[ECCref_MAX_LEN]; unsigned char s[ECCref_MAX_LEN]; } ECCSignature;
typedef struct { unsigned char IssuerName[40]; unsigned char DeviceName[16]; unsigned char DeviceSerial[16];
  unsigned int DeviceVersion; unsigned int StandardVersion; unsigned int AsymAlgAbility[2];
  unsigned int SymAlgAbility; unsigned int HashAlgAbility; unsigned int BufferSize; } DEVICEINFO;
#pragma pack()

#define SDR_OK 0
#define SDR_BASE 0x01000000
#define SDR_UNKNOWERR (SDR_BASE + 0x01)
#define SDR_NOTSUPPORT (SDR_BASE + 0x02)
#define SDR_OPENDEVICE (SDR_BASE + 0x05)
#define SDR_OPENSESSION (SDR_BASE + 0x06)
#define SDR_PARDENY (SDR_BASE + 0x07)
#define SDR_KEYNOTEXIST (SDR_BASE + 0x08)
#define SDR_ALGNOTSUPPORT (SDR_BASE + 0x09)
#define SDR_SIGNERR (SDR_BASE + 0x0D)
#define SDR_VERIFYERR (SDR_BASE + 0x0E)
#define SDR_KEYERR (SDR_BASE + 0x15)
#define SDR_PRKRERR (SDR_BASE + 0x18)
#define SDR_INARGERR (SDR_BASE + 0x1D)

#define MAX_KEYS 16
#define DEV_MAGIC 0x53444644u
#define SES_MAGIC 0x53455353u

typedef struct { unsigned int index; char path[512]; char password[128]; } KeySlot;
typedef struct { unsigned int magic; KeySlot keys[MAX_KEYS]; int nkeys; } Device;
typedef struct { unsigned int magic; Device *dev; unsigned char rights[MAX_KEYS]; } Session;

static int parse_keys(Device *dev) {
  const char *env = getenv("SOFTSDF_KEYS");
  if (!env) return 0;
  char *copy = strdup(env), *save = NULL;
  for (char *tok = strtok_r(copy, ";", &save); tok && dev->nkeys < MAX_KEYS; tok = strtok_r(NULL, ";", &save)) {
    char *p1 = strchr(tok, '|'); if (!p1) continue; *p1++ = 0;
    char *p2 = strchr(p1, '|'); if (!p2) continue; *p2++ = 0;
    KeySlot *k = &dev->keys[dev->nkeys++];
    k->index = (unsigned int)strtoul(tok, NULL, 10);
    snprintf(k->path, sizeof k->path, "%s", p1);
    snprintf(k->password, sizeof k->password, "%s", p2);
  }
  free(copy);
  return 0;
}

static int slot_of(Device *dev, unsigned int index) {
  for (int i = 0; i < dev->nkeys; i++) if (dev->keys[i].index == index) return i;
  return -1;
}

static Session *session_of(void *h) {
  Session *s = (Session *)h;
  return (s && s->magic == SES_MAGIC) ? s : NULL;
}

static EVP_PKEY *load_key(const KeySlot *k) {
  FILE *f = fopen(k->path, "r");
  if (!f) return NULL;
  EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  ERR_clear_error();
  return pkey;
}

static void put32(unsigned char *field64, const BIGNUM *bn) {
  memset(field64, 0, ECCref_MAX_LEN);
  BN_bn2binpad(bn, field64 + 32, 32);  /* right-aligned, as GmSSL */
}

int SDF_OpenDevice(void **phDeviceHandle) {
  if (!phDeviceHandle) return SDR_INARGERR;
  Device *dev = calloc(1, sizeof *dev);
  if (!dev) return SDR_OPENDEVICE;
  dev->magic = DEV_MAGIC;
  parse_keys(dev);
  *phDeviceHandle = dev;
  return SDR_OK;
}

int SDF_CloseDevice(void *hDeviceHandle) {
  Device *dev = hDeviceHandle;
  if (!dev || dev->magic != DEV_MAGIC) return SDR_INARGERR;
  dev->magic = 0;
  free(dev);
  return SDR_OK;
}

int SDF_OpenSession(void *hDeviceHandle, void **phSessionHandle) {
  Device *dev = hDeviceHandle;
  if (!dev || dev->magic != DEV_MAGIC || !phSessionHandle) return SDR_OPENSESSION;
  Session *s = calloc(1, sizeof *s);
  if (!s) return SDR_OPENSESSION;
  s->magic = SES_MAGIC; s->dev = dev;
  *phSessionHandle = s;
  return SDR_OK;
}

int SDF_CloseSession(void *hSessionHandle) {
  Session *s = session_of(hSessionHandle);
  if (!s) return SDR_INARGERR;
  s->magic = 0;
  free(s);
  return SDR_OK;
}

int SDF_GetDeviceInfo(void *hSessionHandle, DEVICEINFO *info) {
  if (!session_of(hSessionHandle) || !info) return SDR_INARGERR;
  memset(info, 0, sizeof *info);
  memcpy(info->IssuerName, "mailbot tests", 13);
  memcpy(info->DeviceName, "softsdf", 7);
  memcpy(info->DeviceSerial, "0000000000000001", 16);
  info->DeviceVersion = 1; info->StandardVersion = 1; info->HashAlgAbility = 1;
  return SDR_OK;
}

int SDF_GetPrivateKeyAccessRight(void *hSessionHandle, unsigned int uiKeyIndex,
                                 unsigned char *pucPassword, unsigned int uiPwdLength) {
  Session *s = session_of(hSessionHandle);
  if (!s || !pucPassword) return SDR_INARGERR;
  int i = slot_of(s->dev, uiKeyIndex);
  if (i < 0) return SDR_KEYNOTEXIST;
  const char *pw = s->dev->keys[i].password;
  if (strlen(pw) != uiPwdLength || memcmp(pw, pucPassword, uiPwdLength) != 0) return SDR_PRKRERR;
  s->rights[i] = 1;
  return SDR_OK;
}

int SDF_ReleasePrivateKeyAccessRight(void *hSessionHandle, unsigned int uiKeyIndex) {
  Session *s = session_of(hSessionHandle);
  if (!s) return SDR_INARGERR;
  int i = slot_of(s->dev, uiKeyIndex);
  if (i < 0) return SDR_KEYNOTEXIST;
  s->rights[i] = 0;
  return SDR_OK;
}

int SDF_ExportSignPublicKey_ECC(void *hSessionHandle, unsigned int uiKeyIndex, ECCrefPublicKey *pub) {
  Session *s = session_of(hSessionHandle);
  if (!s || !pub) return SDR_INARGERR;
  int i = slot_of(s->dev, uiKeyIndex);
  if (i < 0) return SDR_KEYNOTEXIST;
  EVP_PKEY *pkey = load_key(&s->dev->keys[i]);
  if (!pkey) return SDR_KEYERR;
  unsigned char oct[65]; size_t len = 0;
  int ok = EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, oct, sizeof oct, &len);
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  if (!ok || len != 65 || oct[0] != 4) return SDR_KEYERR;
  memset(pub, 0, sizeof *pub);
  pub->bits = 256;
  memcpy(pub->x + 32, oct + 1, 32);
  memcpy(pub->y + 32, oct + 33, 32);
  return SDR_OK;
}

/* pucData is the 32-byte digest e = SM3(Z||M); Z is the caller's business (GmSSL does the same) */
int SDF_InternalSign_ECC(void *hSessionHandle, unsigned int uiISKIndex, unsigned char *pucData,
                         unsigned int uiDataLength, ECCSignature *sig) {
  Session *s = session_of(hSessionHandle);
  if (!s || !pucData || !sig) return SDR_INARGERR;
  if (uiDataLength != 32) return SDR_INARGERR;
  int i = slot_of(s->dev, uiISKIndex);
  if (i < 0) return SDR_KEYNOTEXIST;
  if (!s->rights[i]) return SDR_PARDENY;
  EVP_PKEY *pkey = load_key(&s->dev->keys[i]);
  if (!pkey) return SDR_KEYERR;
  int rc = SDR_SIGNERR;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
  unsigned char der[128]; size_t derlen = sizeof der;
  if (ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_sign(ctx, der, &derlen, pucData, 32) == 1) {
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    if (es) {
      put32(sig->r, ECDSA_SIG_get0_r(es));
      put32(sig->s, ECDSA_SIG_get0_s(es));
      ECDSA_SIG_free(es);
      rc = SDR_OK;
    }
  }
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  return rc;
}

int SDF_ExternalVerify_ECC(void *hSessionHandle, unsigned int uiAlgID, ECCrefPublicKey *pub,
                           unsigned char *pucDataInput, unsigned int uiInputLength, ECCSignature *sig) {
  if (!session_of(hSessionHandle) || !pub || !pucDataInput || !sig) return SDR_INARGERR;
  const char *alg = getenv("SOFTSDF_SM2_1");
  unsigned int sm2_1 = alg ? (unsigned int)strtoul(alg, NULL, 0) : 0x00020100u;
  if (uiAlgID != sm2_1) return SDR_ALGNOTSUPPORT;
  if (uiInputLength != 32 || pub->bits != 256) return SDR_INARGERR;
  unsigned char oct[65]; oct[0] = 4;
  memcpy(oct + 1, pub->x + 32, 32); memcpy(oct + 33, pub->y + 32, 32);
  int rc = SDR_VERIFYERR;
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_sm2);
  EVP_PKEY *pkey = NULL; EVP_PKEY_CTX *ctx = NULL; ECDSA_SIG *es = NULL; unsigned char *der = NULL;
  if (!ec || !EC_KEY_oct2key(ec, oct, 65, NULL)) { rc = SDR_KEYERR; goto done; }
  pkey = EVP_PKEY_new();
  if (!pkey || !EVP_PKEY_assign_EC_KEY(pkey, ec)) goto done;
  ec = NULL;
  es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig->r + 32, 32, NULL), *sv = BN_bin2bn(sig->s + 32, 32, NULL);
  if (!es || !r || !sv || !ECDSA_SIG_set0(es, r, sv)) { BN_free(r); BN_free(sv); goto done; }
  int derlen = i2d_ECDSA_SIG(es, &der);
  ctx = EVP_PKEY_CTX_new(pkey, NULL);
  if (derlen > 0 && ctx && EVP_PKEY_verify_init(ctx) == 1
      && EVP_PKEY_verify(ctx, der, (size_t)derlen, pucDataInput, 32) == 1) rc = SDR_OK;
done:
  OPENSSL_free(der); ECDSA_SIG_free(es); EVP_PKEY_CTX_free(ctx); EVP_PKEY_free(pkey); EC_KEY_free(ec);
  ERR_clear_error();
  return rc;
}

static unsigned int keypairs_generated = 0;

/* How many key pairs SDF_GenerateKeyPair_ECC made in this process (not an SDF function). */
unsigned int SOFTSDF_KeyPairsGenerated(void) { return keypairs_generated; }

/* A fresh SM2 key pair from OpenSSL's generator, both halves to the caller (GM/T 0018 6.3.4). */
int SDF_GenerateKeyPair_ECC(void *hSessionHandle, unsigned int uiAlgID, unsigned int uiKeyBits,
                            ECCrefPublicKey *pub, ECCrefPrivateKey *priv) {
  if (!session_of(hSessionHandle) || !pub || !priv) return SDR_INARGERR;
  const char *alg = getenv("SOFTSDF_SM2_1");
  unsigned int sm2_1 = alg ? (unsigned int)strtoul(alg, NULL, 0) : 0x00020100u;
  if (uiAlgID != sm2_1 && uiAlgID != 0x00020400u && uiAlgID != 0x00020800u) return SDR_ALGNOTSUPPORT;
  if (uiKeyBits != 256) return SDR_INARGERR;
  int rc = SDR_UNKNOWERR;
  EVP_PKEY *pkey = NULL; BIGNUM *d = NULL;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
  unsigned char oct[65]; size_t len = 0;
  if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_generate(ctx, &pkey) != 1) goto done;
  if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d)) goto done;
  if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, oct, sizeof oct, &len)
      || len != 65 || oct[0] != 4) goto done;
  memset(pub, 0, sizeof *pub); memset(priv, 0, sizeof *priv);
  pub->bits = 256; priv->bits = 256;
  memcpy(pub->x + 32, oct + 1, 32);
  memcpy(pub->y + 32, oct + 33, 32);
  put32(priv->K, d);
  keypairs_generated++;
  rc = SDR_OK;
done:
  BN_clear_free(d); EVP_PKEY_free(pkey); EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return rc;
}
