// Built into every program of a ThreadSanitizer build (VOXDB_TSAN=ON); see
// the top-level CMakeLists.txt.
//
// Debian's Abseil is not built with -fsanitize=thread, so TSan does not see
// the atomic reference count of an absl::Status that carries a message: the
// count is dropped inside libabsl_status (Status::UnrefNonInlined), outside
// TSan's view. A status copied to another thread (a writer's error handed
// over by the acknowledging thread) and freed by the last owner is then
// reported as a race between the reader's use of the message and the free,
// although the acq_rel decrement orders them. Only that frame is silenced.
extern "C" const char* __tsan_default_suppressions() { return "race:Status::UnrefNonInlined\n"; }
