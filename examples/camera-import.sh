#!/usr/bin/env bash
# camera-import.sh - copy every photo off a camera into spoolfs, wait until
# every one of them is on the destination, and only then clear the card.
#
#   camera-import.sh [--delete] [MOUNT/DEST]      (default /mnt/up/nas)
#
# Photos land as MOUNT/DEST/YYYY/MM/DD/NAME.EXT (the date the camera gives
# each file).  gphoto2 finishes at local-disk speed: close() returns once a
# file is on the spool disk and queued; the upload runs in the background.
# So "gphoto2 is done" does NOT mean "the photos are on the NAS" - and the
# card is the only other copy until they are.  This script therefore waits
# until, for every file of this import, user.spoolfs.state is "uploaded",
# and nothing of DEST is pending or in DEST/.failed/.  Only then, and only
# with --delete, does it delete the files on the card.  If anything failed
# it says what and exits 1; the card is left alone.  Fix the cause, retry
# with "mv DEST/.failed/X DEST/X" (or "spoolfs retry"), and run the script
# again: files already imported are skipped.
#
# Needs gphoto2 and getfattr (package attr).  INTERVAL=seconds sets how
# often progress is shown (default 10).
set -euo pipefail

# gphoto2 runs this same script as its --hook-script, with ACTION=download
# and ARGUMENT=the file it saved, once per file: write that down.
if [ -n "${SPOOLFS_IMPORT_LIST:-}" ] && [ -n "${ACTION:-}" ]; then
    if [ "$ACTION" = download ] && [ -n "${ARGUMENT:-}" ]; then
        case $ARGUMENT in
        /*) printf '%s\n' "$ARGUMENT" ;;
        *) printf '%s\n' "$PWD/$ARGUMENT" ;;
        esac >>"$SPOOLFS_IMPORT_LIST"
    fi
    exit 0
fi

die() { echo "camera-import: $*" >&2; exit 1; }

delete=no
if [ "${1:-}" = --delete ]; then
    delete=yes
    shift
fi
dest=${1:-/mnt/up/nas}
dest=${dest%/}
interval=${INTERVAL:-10}
self=$(readlink -f "$0")

# DEST must be a destination directory of a mounted spoolfs.
[ -d "$dest/.pending" ] && [ -d "$dest/.failed" ] ||
    die "$dest is not a spoolfs destination (no .pending/ and .failed/ in it)"
command -v gphoto2 >/dev/null || die "gphoto2 is not installed"
command -v getfattr >/dev/null || die "getfattr is not installed (package attr)"

list=$(mktemp)
trap 'rm -f "$list"' EXIT

# 1. Import.  --skip-existing: a second run after a failure only fetches
#    what is not in the mount yet (uploaded files stay listed there).
SPOOLFS_IMPORT_LIST=$list gphoto2 --get-all-files --skip-existing \
    --filename "$dest/%Y/%m/%d/%f.%C" --hook-script "$self"
imported=$(wc -l <"$list")
echo "camera-import: $imported new files spooled into $dest; waiting for the uploads"

# 2. Wait until nothing of DEST is left to upload.  .pending/ mirrors every
#    file that is writing, queued or uploading; a file whose upload fails
#    for good leaves it for .failed/, so this loop ends either way.
while :; do
    pending=$(find "$dest/.pending" -type f | wc -l)
    [ "$pending" -eq 0 ] && break
    echo "camera-import: $pending files still to upload"
    sleep "$interval"
done

# 3. Check every file of this import, one by one.  A file that failed has
#    moved to .failed/ and is missing here: that counts as not uploaded.
bad=0
while IFS= read -r f; do
    state=$(getfattr --absolute-names --only-values -n user.spoolfs.state \
            -- "$f" 2>/dev/null) || state="missing (see $dest/.failed/)"
    if [ "$state" != uploaded ]; then
        echo "camera-import: not uploaded, $state: $f" >&2
        bad=$((bad + 1))
    fi
done <"$list"

# 4. Nothing of DEST may be in .failed/, this import's or an earlier one's
#    (--skip-existing did not fetch those again).
failed=$(find "$dest/.failed" -type f | wc -l)
if [ "$failed" -gt 0 ]; then
    echo "camera-import: $failed files in $dest/.failed/:" >&2
    find "$dest/.failed" -type f -exec sh -c '
        for f; do
            printf "  %s: %s\n" "$f" "$(getfattr --absolute-names \
                --only-values -n user.spoolfs.error -- "$f" 2>/dev/null)"
        done' sh {} + >&2
    bad=$((bad + failed))
fi

if [ "$bad" -gt 0 ]; then
    die "not everything is uploaded (see above); the card is left alone"
fi
echo "camera-import: all $imported files of this import are uploaded; nothing failed"

# 5. Only now is the card's copy redundant.
if [ "$delete" = yes ]; then
    gphoto2 --delete-all-files --recurse
    echo "camera-import: deleted the files on the card"
else
    echo "camera-import: run with --delete to clear the card"
fi
