/* The worker runtime through a C ABI, for engines that are not C++ (Python through ctypes).
 *
 * One handle is one worker: the ranks it serves, its load recorder, its maps and dispatch tables,
 * and its connection to the controller. Weights use the CPU backend (host memory; with
 * "fabric_dir", shared files that other workers on the machine reach). Every call is
 * thread-safe. Functions returning int return 0 on success and -1 on error, with a one-line
 * reason in `err` (NUL-terminated, truncated to err_len) when err is not NULL.
 *
 *   lib = ctypes.CDLL("libeplb_worker.so")
 *   w = lib.eplb_worker_create(b'{"worker_id": "node-0", "ranks": [0, 1], "num_logical": 16,'
 *                              b' "num_redundant": 8, "ep_size": 4, "num_layers": 2,'
 *                              b' "controller": "127.0.0.1:50051"}', err, len(err))
 *   lib.eplb_worker_record(w, layer, ids_ptr, n)        # physical ids served this step
 *   lib.eplb_worker_report(w, first_step, last_step, err, len(err))
 *   lib.eplb_worker_dispatch_table(w, rank, layer, table_ptr, E)
 *   lib.eplb_worker_destroy(w)
 *
 * Config keys (JSON object): worker_id (string), ranks (array of int), node (int, 0),
 * num_logical, num_redundant, ep_size (int), num_shared (int, 1), num_nodes (int, 1),
 * num_layers (int, 1), row_bytes (int, 4096), controller (string "host:port"; empty or absent:
 * no controller, the identity map), report_interval_ms (int, 0: reports only by
 * eplb_worker_report), fabric_dir (string, ""). Unknown keys are an error.
 */
#ifndef EPLB_WORKER_EPLB_WORKER_C_H_
#define EPLB_WORKER_EPLB_WORKER_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eplb_worker eplb_worker;

/* NULL on error (reason in err). With a controller, registers before returning (and adopts the
 * controller's map); without one, serves the identity map at version 1. */
eplb_worker* eplb_worker_create(const char* config_json, char* err, size_t err_len);
void eplb_worker_destroy(eplb_worker* w);

/* Load: physical ids of (token, k) pairs this worker's ranks served in one step of `layer`
 * (other ranks' ids and padding < 0 are ignored). */
int eplb_worker_record(eplb_worker* w, int layer, const int64_t* physical_ids, int64_t n, char* err,
                       size_t err_len);
/* Load counted elsewhere (e.g. on the GPU): counts[p] for every physical id p of `layer`. */
int eplb_worker_record_counts(eplb_worker* w, int layer, const int64_t* counts,
                              int64_t num_physical, char* err, size_t err_len);
/* Sends the counts recorded since the last report to the controller. */
int eplb_worker_report(eplb_worker* w, int64_t first_step, int64_t last_step, char* err,
                       size_t err_len);

/* The map version in force (0: none yet). */
uint64_t eplb_worker_version(eplb_worker* w);
/* Rank `rank`'s static dispatch table of `layer`: out[e] = the physical id its tokens of logical
 * expert e go to; out_len must be >= E. */
int eplb_worker_dispatch_table(eplb_worker* w, int rank, int layer, int32_t* out, int64_t out_len,
                               char* err, size_t err_len);
/* The map of `layer`: out[p] = logical expert of physical id p; out_len must be >= P. */
int eplb_worker_physical_to_logical(eplb_worker* w, int layer, int32_t* out, int64_t out_len,
                                    char* err, size_t err_len);

/* Collective backends: call between two forward steps on every rank. all_min must replace
 * values[0..n) by their element-wise minimum over all ranks (the engine's all-reduce) and
 * return 0. `ran` receives "", "prepare" or "commit". */
typedef int (*eplb_all_min_fn)(int64_t* values, int n, void* user);
int eplb_worker_step_boundary(eplb_worker* w, eplb_all_min_fn all_min, void* user, char* ran,
                              size_t ran_len, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* EPLB_WORKER_EPLB_WORKER_C_H_ */
