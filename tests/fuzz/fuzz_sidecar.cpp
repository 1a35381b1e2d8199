// libFuzzer harness over the patched loader's sidecar validation
// (llama_swgguf_parse in src/llama-swgguf-parse.cpp of patches/llama.cpp/0001).
//
// The input is a whole GGUF file. It is parsed by ggml's own GGUF reader from
// memory (no temp file, no model, no backend); every tensor whose data lies inside
// the input becomes a "file tensor", exactly as llama_model_loader indexes them
// (it refuses files whose tensor data leaves the file, and so does this harness),
// and llama_swgguf_parse validates the sidecars among them. A refusal is a thrown
// std::runtime_error and is fine; anything else (a sanitizer report, an abort, a
// read outside a tensor's data) is a bug.
//
// Build and run: tests/fuzz/run_fuzz.sh (clang, -fsanitize=fuzzer,address,undefined).

#include "llama-swgguf.h"

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

static void quiet(ggml_log_level, const char *, void *) {}

// swg64's golden values (docs/sidecar.md; tests/formats/test_sidecar_hash.py checks Python's)
static void check_golden_hashes() {
    const struct { const char * in; uint64_t h; } golden[] = {
        { "", 0x0000000000000000ULL }, { "a", 0x4dc5ebdae78c2fa1ULL }, { "abcdefgh", 0xb74b5102c6ed9033ULL },
        { "abcdefghi", 0xf00bb6306fccb524ULL },
        { "The quick brown fox jumps over the lazy dog", 0x1be6d4957107143bULL },
    };
    for (const auto & g : golden) {
        if (llama_swgguf_hash(g.in, strlen(g.in)) != g.h) {
            fprintf(stderr, "swg64(\"%s\") is not %016llx\n", g.in, (unsigned long long) g.h);
            abort();
        }
    }
    fprintf(stderr, "swg64 golden values: ok\n");
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    check_golden_hashes();
    llama_log_set(quiet, nullptr);
    ggml_log_set(quiet, nullptr);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    ggml_context * ctx = nullptr;
    gguf_init_params params = { /*.no_alloc =*/ true, /*.ctx =*/ &ctx };
    gguf_context * meta = gguf_init_from_buffer(data, size, params);
    if (meta == nullptr) {
        return 0;
    }
    std::map<std::string, const ggml_tensor *> tensors;
    std::map<const ggml_tensor *, size_t> offsets;
    bool in_bounds = true;
    for (int64_t i = 0; i < gguf_get_n_tensors(meta) && in_bounds; ++i) {
        const char * name = gguf_get_tensor_name(meta, i);
        const ggml_tensor * t = ggml_get_tensor(ctx, name);
        const size_t offs = gguf_get_data_offset(meta) + gguf_get_tensor_offset(meta, i);
        const size_t n = ggml_nbytes(t);
        // llama_model_loader: "tensor data is not within the file bounds"
        in_bounds = offs <= size && n <= size - offs;
        tensors.emplace(name, t);
        offsets.emplace(t, offs);
    }
    if (in_bounds) {
        const llama_swgguf_read_fn read = [&](const ggml_tensor * t, size_t offset, void * dst, size_t n) {
            if (offset > ggml_nbytes(t) || n > ggml_nbytes(t) - offset) {
                abort(); // the parser read outside a tensor's data: a bug
            }
            memcpy(dst, data + offsets.at(t) + offset, n);
        };
        try {
            llama_swgguf_parse(meta, tensors, read);
        } catch (const std::runtime_error &) {
            // refused: fine
        }
    }
    gguf_free(meta);
    ggml_free(ctx);
    return 0;
}
