/*
 * cli.h - the subcommands beyond mounting: status, retry, log (cli_*.c).
 *
 * Each takes main()'s argc/argv with argv[1] the subcommand and returns the
 * process exit status.  An optional CONFIG comes first, as for mounting and
 * `spoolfs check`: the first argument that names a regular file.
 */
#ifndef SPOOLFS_CLI_H
#define SPOOLFS_CLI_H

#include <stdbool.h>

#include "../common/config.h"

int cli_status(int argc, char **argv);
int cli_retry(int argc, char **argv);
int cli_log(int argc, char **argv);

/* Shared by the subcommands (cli.c). */

/* Load CONFIG (or the default one, or the built-in one) like the mount
 * does; prints why on failure and returns -1. */
int cli_load_config(const char *path, struct spoolfs_config *cfg);
/* Is ARG a config file (a regular file) rather than a DEST or PATH? */
bool cli_is_config(const char *arg);
/*
 * The mount point of the running daemon that uses SPOOL_DIR, found in
 * /proc/self/mountinfo among fuse.spoolfs mounts by their root xattr
 * user.spoolfs.spool.  malloc'd, NULL when none is visible.
 */
char *cli_find_mount(const char *spool_dir);
/* Read a whole file (e.g. MOUNT/.status) into a malloc'd string. */
char *cli_read_file(const char *path);

#endif
