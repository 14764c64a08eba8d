/*
 * faulty.h - a failure-injecting backend, for tests only.
 *
 * spoolfs_backend_faulty (declared in backend.h) wraps the real backend that
 * the destination's scheme names and passes every call through to it,
 * except where a test armed a fault.  Route every destination through it
 * with
 *
 *	spoolfs_backend_override = &spoolfs_backend_faulty;
 *
 * and arm faults with the calls below.  The control state is global to the
 * process (all connections, all destinations) and guarded by one mutex, so
 * a test may arm faults and read counters while spool workers run; the
 * mutex is never held across a call into the real backend or a sleep.
 *
 * Its capabilities are RESUME and MTIME whatever the inner backend has:
 * where the inner backend cannot resume, a put at an offset is passed on as
 * a put from 0 (offset still recorded as asked); where it cannot set the
 * mtime, set_mtime succeeds without doing anything.
 */
#ifndef SPOOLFS_FAULTY_H
#define SPOOLFS_FAULTY_H

#include <stdint.h>
#include <stddef.h>

#include "backend.h"

enum spoolfs_faulty_op {
	SPOOLFS_FAULTY_CONNECT,
	SPOOLFS_FAULTY_DISCONNECT,	/* counted only: it cannot fail */
	SPOOLFS_FAULTY_MKDIRS,
	SPOOLFS_FAULTY_PUT,
	SPOOLFS_FAULTY_STAT,
	SPOOLFS_FAULTY_RENAME,
	SPOOLFS_FAULTY_REMOVE,
	SPOOLFS_FAULTY_SET_MTIME,
	SPOOLFS_FAULTY_GET,
	SPOOLFS_FAULTY__COUNT
};

/* Disarm every fault, drop delays, zero the counters, forget the last put. */
void spoolfs_faulty_reset(void);

/*
 * The next N calls of OP fail with CODE and MSG without reaching the real
 * backend (N < 0: every call until reset; N == 0: disarm).  MSG NULL means
 * "injected <op> failure".  Replaces what was armed for OP before.
 */
void spoolfs_faulty_fail(enum spoolfs_faulty_op op, int n,
			 enum spoolfs_err code, const char *msg);

/*
 * The next put writes BYTES bytes (from its offset on) for real -- leaving
 * a true partial file of offset + BYTES bytes at the target -- and then fails
 * with CODE and MSG, like a connection lost mid-transfer.  When BYTES covers
 * the whole rest of the file, everything is written and the put still fails
 * (the reply was lost).  One shot, used up only by a put that reached the
 * cut: when the real put fails first (a missing directory, say), the next
 * put gets it.  Checked after spoolfs_faulty_fail(PUT).
 */
void spoolfs_faulty_fail_put_after(uint64_t bytes, enum spoolfs_err code,
				   const char *msg);

/*
 * The next rename is done for real and then fails with CODE and MSG, like
 * a connection lost before the reply.  One shot; checked after
 * spoolfs_faulty_fail(RENAME).
 */
void spoolfs_faulty_fail_rename_after(enum spoolfs_err code, const char *msg);

/*
 * Sleep MS milliseconds at the start of every call of OP (0: no delay).
 * For put and get the sleep is cut into 10 ms steps with a progress call
 * between them (reporting the offset), so a cancelled transfer still stops
 * promptly with SPOOLFS_E_CANCELLED.
 */
void spoolfs_faulty_delay(enum spoolfs_faulty_op op, unsigned ms);

/* Calls of OP since the last reset, failed ones included. */
unsigned spoolfs_faulty_calls(enum spoolfs_faulty_op op);

/* Files put in batches of two or more (put_batch) since the last reset. */
unsigned spoolfs_faulty_batched(void);

/* Calls of OP that failed because of an armed fault. */
unsigned spoolfs_faulty_injected(enum spoolfs_faulty_op op);

/*
 * The offset the last put was asked to start at, -1 if there was none since
 * the last reset.  PATH (may be NULL) receives its relative path.
 */
int64_t spoolfs_faulty_last_put(char *path, size_t len);

/* "connect", "put", ... */
const char *spoolfs_faulty_op_name(enum spoolfs_faulty_op op);

#endif
