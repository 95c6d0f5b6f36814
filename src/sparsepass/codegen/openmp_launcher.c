/* The parallel-loop launcher sparsepass plugs into its TVM CPU kernels, so that their loops run
 * on the OpenMP team of the program that calls them (PyTorch's) instead of TVM's own pool.
 *
 * A TVM CPU library calls each parallel loop through the function pointer it exports as
 * __TVMBackendParallelLaunch, with the loop body as a lambda taking (task id, group env,
 * closure). This file implements that signature on GOMP_parallel, the entry point of GNU
 * OpenMP (LLVM's libomp exports it too). The OpenMP runtime is not linked here: Python passes
 * the addresses of the runtime PyTorch already loaded, so there is one team, never a second
 * OpenMP runtime. Written as C that also compiles as C++ (TVM links with g++).
 */

#ifdef __cplusplus
extern "C" {
#endif

/* TVM's TVMParallelGroupEnv: the barrier handle (unused: sparsepass kernels use no barrier)
 * and the number of tasks the loop is split into. */
typedef struct {
  void* sync_handle;
  int num_task;
} ParallelGroupEnv;

typedef int (*ParallelLambda)(int task_id, ParallelGroupEnv* env, void* closure);
typedef void (*GompParallel)(void (*body)(void*), void* data, unsigned num_threads,
                             unsigned flags);
typedef int (*OmpQuery)(void);

static GompParallel gomp_parallel;
static OmpQuery omp_thread_num;
static OmpQuery omp_team_size;
static int team_size = 1;

void sparsepass_launcher_init(void* parallel, void* thread_num, void* num_threads) {
  gomp_parallel = (GompParallel)parallel;
  omp_thread_num = (OmpQuery)thread_num;
  omp_team_size = (OmpQuery)num_threads;
}

void sparsepass_launcher_set_threads(int threads) { team_size = threads > 0 ? threads : 1; }

typedef struct {
  ParallelLambda lambda;
  void* closure;
  int status;
} Job;

static void run_task(void* data) {
  Job* job = (Job*)data;
  ParallelGroupEnv env = {0, omp_team_size()};
  int status = job->lambda(omp_thread_num(), &env, job->closure);
  if (status != 0) __atomic_store_n(&job->status, status, __ATOMIC_RELAXED);
}

int sparsepass_parallel_launch(ParallelLambda lambda, void* closure, int num_task) {
  int threads = num_task > 0 ? num_task : team_size;
  if (threads <= 1) {
    ParallelGroupEnv env = {0, 1};
    return lambda(0, &env, closure);
  }
  Job job = {lambda, closure, 0};
  gomp_parallel(run_task, &job, (unsigned)threads, 0u);
  return job.status;
}

#ifdef __cplusplus
}
#endif
