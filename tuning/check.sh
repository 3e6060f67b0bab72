#!/usr/bin/env bash
# check.sh — print this machine's settings that matter to chronik beside the recommended
# values. Exits 1 only if a BLOCKER was found (a setting that stops chronik-server from
# starting or from doing I/O), 0 otherwise; LOW rows are advice.
#
# Usage: tuning/check.sh [--cores N] [DATA_DIR]
#   --cores N   shard count the broker will run (default: as chronik does, nproc - 1, ≥ 1)
#   DATA_DIR    the broker's data-dir: tests O_DIRECT there with one 4 KiB write
#
# Needs only bash, coreutils and procps. Limits (ulimit) are those of the shell running this
# script; a systemd service gets the unit's LimitMEMLOCK/LimitNOFILE instead — if a
# chronik-server process is running, its own limits are shown too.

set -u

cores=""
data_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cores) cores="${2:-}"; shift 2 ;;
        --cores=*) cores="${1#--cores=}"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "check.sh: unknown option $1" >&2; exit 2 ;;
        *) data_dir="$1"; shift ;;
    esac
done

blockers=0
lows=0
notes=()

row() { # setting current recommended status
    printf '%-30s %-26s %-26s %s\n' "$1" "$2" "$3" "$4"
    case "$4" in
        BLOCKER) blockers=$((blockers + 1)) ;;
        LOW) lows=$((lows + 1)) ;;
    esac
}
note() { notes+=("$1"); }

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# Compare "current >= want" (numbers; "unlimited" counts as infinite).
at_least() {
    [ "$1" = unlimited ] && return 0
    is_uint "$1" || return 1
    [ "$1" -ge "$2" ]
}

sysctl_get() { sysctl -n "$1" 2>/dev/null | tr -s '\t ' ' '; }

# ---------------------------------------------------------------- CPU and shard count
ncpu=$(nproc 2>/dev/null || echo 1)
if [ -z "$cores" ]; then
    cores=$((ncpu - 1))
    [ "$cores" -lt 1 ] && cores=1
fi
if ! is_uint "$cores" || [ "$cores" -lt 1 ]; then
    echo "check.sh: --cores must be a positive integer" >&2
    exit 2
fi

uid=$(id -u)
has_ipc_lock=0
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status 2>/dev/null)
if [ -n "$capeff" ] && [ $(( (16#$capeff >> 14) & 1 )) -eq 1 ]; then
    has_ipc_lock=1
fi

printf 'chronik host check — %s, kernel %s, %s CPUs, %s shard(s), uid %s\n\n' \
    "$(uname -n)" "$(uname -r)" "$ncpu" "$cores" "$uid"
printf '%-30s %-26s %-26s %s\n' SETTING CURRENT RECOMMENDED STATUS
printf '%-30s %-26s %-26s %s\n' ------- ------- ----------- ------

# ---------------------------------------------------------------- kernel / io_uring
kver=$(uname -r)
kmaj=${kver%%.*}
krest=${kver#*.}
kmin=${krest%%[!0-9]*}
if is_uint "$kmaj" && is_uint "$kmin" &&
    { [ "$kmaj" -gt 5 ] || { [ "$kmaj" -eq 5 ] && [ "$kmin" -ge 8 ]; }; }; then
    row "kernel version" "$kmaj.$kmin" ">= 5.8 (io_uring)" OK
else
    row "kernel version" "$kver" ">= 5.8 (io_uring)" BLOCKER
    note "kernel: glommio needs io_uring features of Linux 5.8 or later."
fi

if [ -r /proc/sys/kernel/io_uring_disabled ]; then
    iud=$(cat /proc/sys/kernel/io_uring_disabled)
    case "$iud" in
        0) row "kernel.io_uring_disabled" "0" "0" OK ;;
        1) row "kernel.io_uring_disabled" "1" "0" LOW
           note "kernel.io_uring_disabled=1: only CAP_SYS_ADMIN or members of kernel.io_uring_group may use io_uring; the chronik user must be in that group, or set it to 0." ;;
        *) row "kernel.io_uring_disabled" "$iud" "0" BLOCKER
           note "kernel.io_uring_disabled=$iud: io_uring is off for everyone; chronik cannot run. sysctl -w kernel.io_uring_disabled=0" ;;
    esac
else
    row "kernel.io_uring_disabled" "(absent)" "0" OK
fi

# ---------------------------------------------------------------- limits
need_kib=$((512 * cores))
memlock=$(ulimit -l)
if at_least "$memlock" "$need_kib"; then
    st=OK
elif [ "$uid" -eq 0 ] || [ "$has_ipc_lock" -eq 1 ]; then
    st=OK
    note "ulimit -l is $memlock KiB, below ${need_kib} KiB, but this user is root/CAP_IPC_LOCK, which is exempt; the service user (User=chronik) is not: keep LimitMEMLOCK=infinity."
else
    st=BLOCKER
    note "ulimit -l: glommio registers io_uring buffers, >= 512 KiB locked memory per shard executor (${cores} shard(s) → ${need_kib} KiB). Raise LimitMEMLOCK (systemd) or memlock in /etc/security/limits.conf. Too low, chronik exits at start with \"a shard exited during start-up\"."
fi
[ "$memlock" = unlimited ] || memlock="$memlock KiB"
row "ulimit -l (locked memory)" "$memlock" "unlimited (>= ${need_kib} KiB)" "$st"

nofile=$(ulimit -n)
if at_least "$nofile" 1048576; then st=OK; else st=LOW
    note "ulimit -n: one descriptor per connection plus three per segment; the unit sets LimitNOFILE=1048576."
fi
row "ulimit -n (open files)" "$nofile" "1048576" "$st"

# Limits of a running broker, if any (these are what matter under systemd).
if command -v pgrep >/dev/null 2>&1; then
    for pid in $(pgrep -x chronik-server 2>/dev/null | head -n 3); do
        [ -r "/proc/$pid/limits" ] || continue
        pl=$(awk '/^Max locked memory/ {print $4}' "/proc/$pid/limits")
        pn=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")
        plk=$pl
        is_uint "$pl" && plk=$((pl / 1024))
        if at_least "$plk" "$need_kib"; then st=OK; else st=LOW; fi
        [ "$plk" = unlimited ] || plk="$plk KiB"
        row "pid $pid memlock" "$plk" "unlimited (>= ${need_kib} KiB)" "$st"
        if at_least "$pn" 1048576; then st=OK; else st=LOW; fi
        row "pid $pid nofile" "$pn" "1048576" "$st"
    done
fi

# ---------------------------------------------------------------- CPUs
if [ "$ncpu" -ge 2 ]; then st=OK; else st=LOW
    note "1 CPU: the controller and the shard share it (with pinning, both on core 0)."
fi
row "CPUs (controller + shards)" "$ncpu ($cores shard(s))" ">= 2" "$st"

# ---------------------------------------------------------------- sysctls
# name, recommended, mode: min (current >= rec), max (current <= rec), tcp (3rd field >= rec)
check_sysctl() {
    local name=$1 rec=$2 mode=$3 cur val st
    cur=$(sysctl_get "$name")
    if [ -z "$cur" ]; then
        row "$name" "(unreadable)" "$rec" "n/a"
        return
    fi
    case "$mode" in
        tcp) val=$(echo "$cur" | awk '{print $3}'); want=$(echo "$rec" | awk '{print $3}')
             if at_least "$val" "$want"; then st=OK; else st=LOW; fi ;;
        max) if is_uint "$cur" && [ "$cur" -le "$rec" ]; then st=OK; else st=LOW; fi ;;
        *)   if at_least "$cur" "$rec"; then st=OK; else st=LOW; fi ;;
    esac
    row "$name" "$cur" "$rec" "$st"
}
check_sysctl net.core.somaxconn 4096 min
check_sysctl net.ipv4.tcp_max_syn_backlog 8192 min
check_sysctl net.core.rmem_max 16777216 min
check_sysctl net.core.wmem_max 16777216 min
check_sysctl net.ipv4.tcp_rmem "4096 131072 16777216" tcp
check_sysctl net.ipv4.tcp_wmem "4096 131072 16777216" tcp
check_sysctl vm.max_map_count 262144 min
check_sysctl fs.aio-max-nr 1048576 min
check_sysctl fs.file-max 2097152 min
check_sysctl vm.swappiness 1 max
check_sysctl vm.dirty_background_ratio 5 max
check_sysctl vm.dirty_ratio 20 max

# ---------------------------------------------------------------- THP, governor
thp_file=/sys/kernel/mm/transparent_hugepage/enabled
if [ -r "$thp_file" ]; then
    thp=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' "$thp_file")
    if [ "$thp" = always ]; then st=LOW
        note "transparent hugepages=always: khugepaged compaction causes latency spikes; use madvise or never."
    else st=OK; fi
    row "transparent_hugepage" "$thp" "madvise or never" "$st"
else
    row "transparent_hugepage" "(unreadable)" "madvise or never" "n/a"
fi

gov_file=/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor
if [ -r "$gov_file" ]; then
    govs=$(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort -u | tr '\n' ' ')
    govs=${govs% }
    if [ "$govs" = performance ]; then st=OK; else st=LOW
        note "CPU governor '$govs': shards busy-poll io_uring; 'performance' avoids frequency ramp-up latency (cpupower frequency-set -g performance)."
    fi
    row "CPU governor" "$govs" "performance" "$st"
else
    row "CPU governor" "(not exposed)" "performance" "n/a"
fi

# ---------------------------------------------------------------- data dir, O_DIRECT
if [ -n "$data_dir" ]; then
    probe_dir=$data_dir
    while [ ! -d "$probe_dir" ] && [ "$probe_dir" != / ]; do
        probe_dir=$(dirname "$probe_dir")
    done
    [ "$probe_dir" = "$data_dir" ] ||
        note "$data_dir does not exist yet (chronik creates it); tested its nearest existing parent $probe_dir."
    fstype=$(df --output=fstype "$probe_dir" 2>/dev/null | tail -n 1 | tr -d ' ')
    [ -n "$fstype" ] || fstype=$(stat -f -c %T "$probe_dir" 2>/dev/null)
    row "data dir file system" "$fstype ($probe_dir)" "ext4 or xfs, local" \
        "$(case "$fstype" in tmpfs|overlay|nfs*|fuse*) echo LOW ;; *) echo OK ;; esac)"
    case "$fstype" in
        tmpfs) note "tmpfs: data is lost on reboot; glommio does not use direct I/O on tmpfs (page cache only). Fine for tests only." ;;
        overlay) note "overlay (container root fs): O_DIRECT depends on the upper file system and writes pay copy-up; mount a volume for data-dir." ;;
        nfs*|fuse*) note "$fstype: network/FUSE file systems often refuse O_DIRECT and fdatasync semantics vary; use a local disk." ;;
    esac
    if [ ! -w "$probe_dir" ]; then
        row "O_DIRECT write (4 KiB)" "not writable ($(id -un))" "works" LOW
        note "$probe_dir is not writable by $(id -un): cannot test O_DIRECT; the broker's user must be able to write data-dir."
    else
        tmp=$(mktemp "$probe_dir/.chronik-odirect.XXXXXX" 2>/dev/null)
        if [ -z "$tmp" ]; then
            row "O_DIRECT write (4 KiB)" "cannot create temp file" "works" LOW
        elif err=$(dd if=/dev/zero of="$tmp" bs=4096 count=1 oflag=direct conv=fsync 2>&1); then
            row "O_DIRECT write (4 KiB)" "works" "works" OK
        else
            row "O_DIRECT write (4 KiB)" "refused" "works" LOW
            note "O_DIRECT refused on $probe_dir ($(echo "$err" | head -n 1)): chronik falls back to buffered io_uring I/O (logged once), which goes through the page cache."
        fi
        [ -n "$tmp" ] && rm -f "$tmp"
    fi
else
    row "O_DIRECT write (4 KiB)" "(no DATA_DIR given)" "works" "n/a"
fi

# ---------------------------------------------------------------- summary
echo
if [ "${#notes[@]}" -gt 0 ]; then
    echo "Notes:"
    for n in "${notes[@]}"; do
        printf '  - %s\n' "$n"
    done
    echo
fi
echo "Limits above are this shell's; under systemd check: systemctl show chronik -p LimitMEMLOCK -p LimitNOFILE"
if [ "$blockers" -gt 0 ]; then
    echo "RESULT: $blockers BLOCKER(s), $lows LOW — chronik-server will not start (or cannot do I/O) as configured."
    exit 1
fi
echo "RESULT: no blockers, $lows LOW (advice; see tuning/sysctl.d/99-chronik.conf and tuning/README.md)."
exit 0
