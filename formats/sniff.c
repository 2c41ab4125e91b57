/* sniff.c - see sniff.h. Magic numbers: zip "PK\3\4" (PyTorch >= 1.6 checkpoints), pickle
 * protocol 2-5 "\x80\x02".."\x80\x05" (older torch.save), GGUF "GGUF", gzip 1f 8b, zstd
 * 28 b5 2f fd, HDF5 "\x89HDF", NumPy "\x93NUMPY", Git LFS pointers "version
 * https://git-lfs". */
#include "sniff.h"

#include <stdio.h>
#include <string.h>

static bool starts(const unsigned char *h, size_t n, const char *magic, size_t len)
{
    return n >= len && memcmp(h, magic, len) == 0;
}

/* Printable ASCII, whitespace, or bytes of UTF-8 sequences: text. */
static bool looks_like_text(const unsigned char *h, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = h[i];
        if (c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c < 0x7f) || c >= 0x80) continue;
        return false;
    }
    /* bytes >= 0x80 must form UTF-8 lead/continuation patterns, roughly */
    for (size_t i = 0; i < n; i++) {
        if (h[i] < 0x80) continue;
        size_t more = (h[i] & 0xe0) == 0xc0 ? 1 : (h[i] & 0xf0) == 0xe0 ? 2 : (h[i] & 0xf8) == 0xf0 ? 3 : 9;
        if (more == 9) return false;
        for (size_t k = 1; k <= more && i + k < n; k++)
            if ((h[i + k] & 0xc0) != 0x80) return false;
        i += more;
    }
    return true;
}

const char *mk_sniff(const unsigned char *h, size_t n, uint64_t file_size, bool always, char *buf, size_t cap)
{
    if (file_size == 0) return snprintf(buf, cap, "it is empty"), buf;
    if (starts(h, n, "PK\003\004", 4)) return snprintf(buf, cap, "a zip archive: a PyTorch checkpoint (.bin, .pt)?"), buf;
    if (n >= 2 && h[0] == 0x80 && h[1] >= 2 && h[1] <= 5)
        return snprintf(buf, cap, "a Python pickle: an old PyTorch checkpoint (.bin, .pt)?"), buf;
    if (starts(h, n, "GGUF", 4)) return snprintf(buf, cap, "a GGUF file"), buf;
    if (starts(h, n, "\x1f\x8b", 2)) return snprintf(buf, cap, "gzip-compressed data"), buf;
    if (starts(h, n, "\x28\xb5\x2f\xfd", 4)) return snprintf(buf, cap, "zstd-compressed data"), buf;
    if (starts(h, n, "\x89HDF", 4)) return snprintf(buf, cap, "an HDF5 file (Keras/TensorFlow weights?)"), buf;
    if (starts(h, n, "\x93NUMPY", 6)) return snprintf(buf, cap, "a NumPy array"), buf;
    if (starts(h, n, "version https://git-lfs", 23))
        return snprintf(buf, cap, "a Git LFS pointer: the file was not downloaded; run git lfs pull"), buf;
    size_t i = 0;
    while (i < n && (h[i] == ' ' || h[i] == '\n' || h[i] == '\r' || h[i] == '\t')) i++;
    if (i < n && (h[i] == '{' || h[i] == '[') && looks_like_text(h, n))
        return snprintf(buf, cap, "it starts with '%c', a JSON text?", h[i]), buf;
    if (looks_like_text(h, n) && n >= 4) {
        /* the first words, control characters shown as spaces */
        char words[24];
        size_t k = 0;
        for (size_t j = 0; j < n && k < 20; j++) words[k++] = h[j] < 0x20 || h[j] >= 0x7f ? ' ' : (char)h[j];
        words[k] = 0;
        return snprintf(buf, cap, "text: '%s%s'", words, n > k || file_size > k ? "..." : ""), buf;
    }
    if (!always) return NULL;
    size_t o = (size_t)snprintf(buf, cap, "binary data starting with");
    for (size_t j = 0; j < n && j < 8 && o + 4 < cap; j++) o += (size_t)snprintf(buf + o, cap - o, " %02x", h[j]);
    return buf;
}
