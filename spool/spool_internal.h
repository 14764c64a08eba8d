/*
 * spool_internal.h - the in-memory tree, shared by spool.c (namespace and
 * content) and uploader.c (workers).  Not for fs/.
 *
 * LOCKING.  One mutex, spool->lock, guards the whole tree, every node field
 * marked [L], each destination's queue, spool->used and the journal.  It is
 * never held across a network call, a FUSE reply or a data-file fsync, nor
 * across the journal's fsync at close() (spool_journal_sync() needs no
 * lock); only a split put's durable record (uploader.c split_begin(), once
 * per big file) fsyncs under it.  Lock order: spool->lock, then nothing (log
 * and journal take no lock of their own).
 *
 * LIFETIME.  A node is owned by the tree while it is linked (parent != NULL
 * or it is an area root) and by its references otherwise: open handles and
 * a worker uploading it each hold one (refs [L]).  node_put() frees an
 * unlinked node when the last reference goes.
 *
 * SYNC MODEL.  A file's desired state is what the user sees (content
 * generation gen, relative path, mtime, home destination); its remote state
 * is rdest/rpath/rgen/rmtime.  A worker makes the remote match the desired
 * state: a full upload when the content on the server is not the current
 * generation, else only a rename and/or an mtime update.  state is
 * UPLOADED exactly when the two match (node_synced()).
 *
 * OPEN FILES.  FUSE sends a flush for every close() of any descriptor,
 * including a forked child's copy, so a flush does not mean the writer is
 * done.  A flushed file is durable and QUEUED but no worker takes it while
 * a write handle is open (writers > 0); the journal row says so (open), and
 * recovery treats such a file as incomplete.
 */
#ifndef SPOOL_INTERNAL_H
#define SPOOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "../backends/backend.h"
#include "journal.h"
#include "spool.h"

struct spool_dest;
struct worker;

/* Recycled data files: at most POOL_MAX, each of at most POOL_FILE_MAX. */
#define POOL_MAX 32
#define POOL_FILE_MAX (1u << 20)
/* Dropped data files holding this much make a worker sync the journal at
 * once (spool_drops_tend_locked()) ... */
#define DROP_SYNC_BYTES (64u << 20)
/* ... and when idle, for drops this old. */
#define DROP_SYNC_MS 1000

/* A small file's close commits its content into the journal instead of
 * fsyncing its data file (spool.c, commit_written()): files of at most
 * INLINE_FILE_MAX bytes, while the inline copies hold INLINE_TOTAL_MAX or
 * less in all. */
#define INLINE_FILE_MAX (32u << 10)
#define INLINE_TOTAL_MAX (32u << 20)

/* A new file starts in memory (spool.c, "Small files in memory") while
 * memory files hold at most MEM_TOTAL_MAX bytes and number at most
 * MEM_FILES_MAX (each holds a descriptor, see spool->mem_files_max). */
#define MEM_TOTAL_MAX (32u << 20)
#define MEM_FILES_MAX 8192

/* A data file whose row no longer wants it, kept as data/drop.ID until the
 * journal saying so is on disk (spool.c). */
struct spool_drop {
	int64_t id;
	uint64_t size;
	int64_t at_ms;		/* when dropped */
	uint64_t ticket;	/* spool_sync() calls begun before its commit
				 * was known done; 0: not known yet */
	bool recyclable;	/* nobody has it open: may become free.K */
};

struct spool_node {
	int64_t id;			/* journal row id; 0 for area roots */
	struct spool_dest *dest;	/* [L] home destination */
	int area;			/* [L] enum spool_area */
	struct spool_node *parent;	/* [L] NULL: root or unlinked */
	char *name;			/* [L] */
	bool is_dir;
	bool is_root;
	bool linked;			/* [L] in the tree (roots always) */

	/* directory: children hash table [L] */
	struct spool_node **tab;
	size_t tabsize, nkids;
	struct spool_node *hnext;	/* [L] next in the parent's bucket */
	uint64_t npend;			/* [L] pending files beneath (dirs) */

	/* attributes [L] */
	uint32_t mode, uid, gid;
	struct timespec mtime, ctime;
	uint64_t size;

	/* file state [L] */
	int state;			/* enum spool_state */
	int attempts;
	char *error;
	int64_t ready_at;		/* ms, CLOCK_REALTIME */
	uint64_t gen;
	bool has_data;
	bool data_renamed;		/* its data file was recycled (renamed)
					 * and the directory not fsynced since */
	bool inlined;			/* the journal may hold an inline copy
					 * of its content: the data file is not
					 * known to be on disk (spool.c) */
	uint32_t inline_len;		/* bytes of that copy */
	int mfd;			/* its content in memory (a memfd), not
					 * in data/ID; -1: on disk */
	uint64_t mem_size;		/* [L] bytes of it in spool->mem_bytes */
	int wflight;			/* [L] writes between write_begin and
					 * write_end */
	struct spool_handle *handles;	/* [L] its open handles */
	struct spool_dest *target;	/* fallback being tried, NULL = dest */
	struct spool_dest *rdest;	/* remote copy */
	char *rpath;
	char *mv_to;			/* a rename of the copy to this may
					 * have been done on the server (set
					 * and synced before it, cleared after) */
	uint64_t rgen;
	int64_t rmtime;
	char *rtmp;			/* partial upload for resume */
	char *tmp_to;			/* a rename of rtmp to this (its commit)
					 * may have been done on the server
					 * (set before it, gone with rtmp) */
	struct spool_dest *tmp_dest;
	uint64_t tmp_gen;		/* 0: written by a split put (a gap) */
	uint64_t tmp_safe;		/* tmp_gen 0: bytes from 0 without a gap
					 * (in memory only) */
	bool meta_gave_up;		/* remote rename/mtime failed for good */

	/* open handles and writes [L] */
	int refs;
	int openers, writers;
	uint64_t wseq;			/* bumped on every content change */
	uint64_t committed_wseq;	/* wseq at the last queue commit */
	bool fetching;			/* content being fetched back */
	bool was_open;			/* loaded: a writer had it open at the crash */

	/* upload [L] */
	bool busy;			/* a worker has it */
	bool streaming;			/* ...to upload it while it is written */
	bool no_stream;			/* not again until it is closed */
	uint64_t stream_mark;		/* bytes of this gen that may be in a
					 * server temp: writing below bumps gen */
	uint64_t progress;		/* bytes sent of the current upload */
	int64_t upload_start_ms;	/* when it entered uploading (status.c) */
	struct spool_dest *queued_on;	/* whose queue it is in, NULL none */
	bool q_remote;			/* in queued_on->qr_tab (uploader.c) */
	struct spool_node *qr_next;	/* ...its chain there */
	struct spool_node *qprev, *qnext;
};

struct spool_dest {
	const struct spoolfs_dest *conf;
	struct spool *sp;
	struct spool_node *root[2];	/* SPOOL_AREA_MAIN, SPOOL_AREA_FAILED */
	struct spool_dest *fallback;
	struct spool_node *qhead, *qtail;	/* [L] nodes needing work here */
	/* [L] queued nodes with a copy on this server, by rpath (a hash
	 * table of qr_size chains, power of 2; uploader.c, owner_locked()) */
	struct spool_node **qr_tab;
	size_t qr_size, nq_remote;
	struct spool_node **stuck;	/* [L] files whose rename here gave up
					 * (meta_gave_up), with a ref each;
					 * stale entries go lazily */
	size_t nstuck, capstuck;
	char *prune[16];		/* [L] server directories that files
					 * left: maybe empty (uploader.c) */
	size_t nprune;
	bool pruning;			/* [L] a worker removes one: the
					 * others take no job meanwhile */
	bool small_taken;		/* [L] a worker is sending small
					 * files (uploader.c, batches) */
	struct spool_node *stream_offer;	/* [L] a big file being written
						 * that an idle worker may stream
						 * (holds a ref) */
	struct worker *workers;
	int nworkers;
	/* max_rate accounting [L] */
	int64_t rate_epoch_ms;
	uint64_t rate_bytes;
	/* health [L] */
	int64_t last_ok_ms, last_err_ms;
	char *last_err;
};

struct spool {
	const struct spoolfs_config *cfg;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* work may be ready, or stopping */
	pthread_cond_t stream_cond;	/* a streamed file grew, closed or
					 * changed, or stopping */
	struct spool_journal *j;	/* [L] */
	char *dir;			/* the spool directory */
	int datafd;			/* SPOOL/data, O_DIRECTORY */
	int lockfd;
	struct spool_dest *dests;
	size_t ndests;
	struct spool_node *trash;	/* [L] root of SPOOL_AREA_TRASH */
	bool pool[POOL_MAX];		/* [L] data/free.K holds a recycled,
					 * unused data file (spool.c) */
	int npool;			/* [L] */
	struct spool_drop *drops;	/* [L] */
	size_t ndrops, drops_cap;	/* [L] */
	uint64_t drop_bytes;		/* [L] */
	int64_t drops_retry_ms;		/* [L] no sync for drops before */
	atomic_uint_least64_t syncs_begun;	/* spool_sync() calls begun */
	atomic_uint_least64_t synced;	/* the latest of them that succeeded */
	uint64_t used;			/* [L] bytes of content not uploaded */
	uint64_t inline_bytes;		/* [L] in the journal's inline copies */
	uint64_t mem_bytes;		/* [L] in files held in memory */
	size_t nmem, mem_files_max;	/* [L] files held in memory; limit */
	pthread_cond_t write_cond;	/* a file's writes in flight ended */
	bool stopping;			/* [L] */
	bool started;
	uid_t uid;
	gid_t gid;
	struct timespec mounted_at;
	/*
	 * In every temp name this mount makes on a server
	 * (".spoolfs-TAG-ID-GEN.part"): random, so that two spools uploading
	 * into one directory (two laptops, one NAS), whose ids both count
	 * from 1, never write the same temp, and no user file can be named
	 * like a temp to come.  A temp is recorded with its full name before
	 * a byte is sent, so a new tag after a restart loses nothing.
	 */
	char tmp_tag[9];

	/* paths the daemon moved on its own (to .failed/): the kernel may
	 * still cache them; a worker tells it, without the lock [L] */
	spool_inval_fn inval_fn;
	void *inval_arg;
	char **inval;
	size_t ninval, invalcap;
};

/* Time in ms since the epoch. */
int64_t spool_now_ms(void);

/* Node helpers (spool.c), all with spool->lock held. */
char *node_relpath_locked(const struct spool_node *n);
/* The node at REL under D's own tree (not .failed/), or NULL. */
struct spool_node *node_at_locked(const struct spool_dest *d, const char *rel);
/* FNV-1a of a string: directory children, queued remote copies */
uint64_t spool_str_hash(const char *s);
bool node_synced_locked(const struct spool_node *n);
void node_save_locked(struct spool *sp, struct spool_node *n);
/* The same, quiet: 0 or -errno. */
int node_save_checked_locked(struct spool *sp, struct spool_node *n);
/* The same, fsynced with fsync = close; -errno on failure (linked nodes only). */
int node_save_durable_locked(struct spool *sp, struct spool_node *n);
void node_put_locked(struct spool *sp, struct spool_node *n);
void node_set_state_locked(struct spool *sp, struct spool_node *n, int state);
void node_set_error_locked(struct spool_node *n, const char *msg);
/* Re-evaluate what n needs (queued, uploaded) and its queue membership. */
void node_requeue_locked(struct spool *sp, struct spool_node *n);
/* Move a file that failed for good to DEST/.failed/ (same relpath). */
void node_fail_locked(struct spool *sp, struct spool_node *n, const char *msg);
void node_free_data_locked(struct spool *sp, struct spool_node *n);
/* node_free_data_locked() in two steps, for a caller that batches the row
 * with more: forget (true if there was a copy), save and commit, recycle. */
bool node_forget_data_locked(struct spool *sp, struct spool_node *n);
void node_recycle_data_locked(struct spool *sp, struct spool_node *n);
int spool_sync(struct spool *sp);
bool spool_drops_tend_locked(struct spool *sp, bool idle, int64_t *wake);
/* Remember that the mount path "/DEST/REL" of N's home is gone. */
void node_inval_locked(struct spool *sp, const struct spool_node *n,
		       const char *rel);
/* Make the calls node_inval_locked() asked for; drops the lock meanwhile. */
void spool_inval_drain_locked(struct spool *sp);

/* Hand N's partial upload to the trash area, for a worker to remove. */
void node_trash_tmp_locked(struct spool *sp, struct spool_node *n);
/* N no longer knows of an uploaded copy (rpath, rdest); no save. */
void node_forget_copy(struct spool_node *n);
/* N no longer knows of a temp (rtmp, tmp_dest, tmp_to); no save. */
void node_forget_tmp(struct spool_node *n);
/* N stops pointing at its uploaded copy: to the trash (TRASH, on N's own
 * destination) or left where it is. */
void node_let_go_of_copy_locked(struct spool *sp, struct spool_node *n,
				bool trash);
/* ...when the copy is stale (older content) and not at N's name. */
void node_stale_copy_locked(struct spool *sp, struct spool_node *n,
			    bool trash);
/* Unlink N from wherever it is and delete its journal row. */
void node_drop_locked(struct spool *sp, struct spool_node *n);
void spool_event_locked(struct spool *sp, struct spool_node *n,
			const char *dest, const char *kind, const char *msg);
int spool_data_open(struct spool *sp, int64_t id, int flags);
/* A descriptor of N's content, in memory or in data/ID; takes the lock. */
int node_data_open(struct spool *sp, struct spool_node *n, int flags);

/*
 * Streaming (uploader.c): a file still being written that has grown past
 * STREAM_MIN may be uploaded while it grows, by an idle worker.
 */
#define STREAM_MIN (32ull << 20)
/* The file grew at its end: offer it to an idle worker of its destination. */
void stream_offer_locked(struct spool *sp, struct spool_node *n);

/* Workers (uploader.c). */
int uploader_start(struct spool *sp);
void uploader_stop(struct spool *sp);
/* DIR (taken) may now be empty on D's server: an idle worker removes it
 * there unless the mount has it (uploader.c, "Emptied directories"). */
void uploader_prune_locked(struct spool_dest *d, char *dir);
void queue_remove_locked(struct spool_node *n);
void queue_add_locked(struct spool_dest *d, struct spool_node *n);
/* The destination a node's next job goes to. */
struct spool_dest *node_job_dest_locked(const struct spool_node *n);
/* min(max, min * 2^(attempt-1)), minus up to 25% jitter when seed. */
uint64_t spool_backoff_ms(uint64_t min, uint64_t max, int attempt,
			  unsigned int *seed);

#endif
