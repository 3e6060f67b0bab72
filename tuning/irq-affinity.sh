#!/usr/bin/env bash
# irq-affinity.sh — plan (and optionally apply) NIC interrupt affinity that keeps chronik's
# shard cores free of network IRQs.
#
# Usage: tuning/irq-affinity.sh NIC [KEEP_FREE_CPUS] [--apply]
#   NIC             network interface, e.g. eth0 (matched in /proc/interrupts by its name,
#                   or by its virtioN name for virtio-net)
#   KEEP_FREE_CPUS  CPU list to keep free of NIC IRQs, e.g. "1-7" or "2,4-6".
#                   Default: 1..N-1, the shard cores of a pinned chronik (the controller is
#                   on core 0, so the IRQs go there).
#   --apply         write /proc/irq/<n>/smp_affinity_list (root). Without it: dry run, nothing
#                   is written.
#
# The IRQs are spread round-robin over the remaining CPUs. Settings do not survive a reboot,
# and irqbalance (if running) may overwrite them: stop it or add IRQBALANCE_BANNED_CPULIST.

set -u

apply=0
nic=""
keep=""
for a in "$@"; do
    case "$a" in
        --apply) apply=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "irq-affinity.sh: unknown option $a" >&2; exit 2 ;;
        *) if [ -z "$nic" ]; then nic=$a
           elif [ -z "$keep" ]; then keep=$a
           else echo "irq-affinity.sh: too many arguments" >&2; exit 2; fi ;;
    esac
done
if [ -z "$nic" ]; then
    sed -n '2,16p' "$0" >&2
    exit 2
fi
[ -d "/sys/class/net/$nic" ] || echo "warning: no interface $nic in /sys/class/net" >&2

# Expand a CPU list ("0-3,6") to one number per line.
expand_list() {
    local part lo hi
    local IFS=,
    for part in $1; do
        case "$part" in
            *-*) lo=${part%-*}; hi=${part#*-} ;;
            *) lo=$part; hi=$part ;;
        esac
        case "$lo$hi" in ''|*[!0-9]*) echo "bad CPU list: $1" >&2; return 1 ;; esac
        seq "$lo" "$hi"
    done
}

online=$(cat /sys/devices/system/cpu/online 2>/dev/null || echo "0-$(($(nproc) - 1))")
online_cpus=$(expand_list "$online") || exit 2
ncpu=$(echo "$online_cpus" | wc -l)
if [ -z "$keep" ]; then
    if [ "$ncpu" -le 1 ]; then
        keep=""
    elif [ "$ncpu" -eq 2 ]; then
        keep="1"
    else
        keep="1-$((ncpu - 1))"
    fi
fi
keep_cpus=""
if [ -n "$keep" ]; then
    keep_cpus=$(expand_list "$keep") || exit 2
fi
allowed=()
for c in $online_cpus; do
    echo "$keep_cpus" | grep -qx "$c" || allowed+=("$c")
done
if [ "${#allowed[@]}" -eq 0 ]; then
    echo "error: keeping CPUs $keep free leaves no online CPU (online: $online) for IRQs" >&2
    exit 2
fi

# Names under which the NIC's IRQs appear: the interface name, and virtioN for virtio-net.
alt=""
dev=$(readlink -f "/sys/class/net/$nic/device" 2>/dev/null || true)
case "${dev##*/}" in virtio[0-9]*) alt=${dev##*/} ;; esac

# IRQ number and name (last field) of the matching lines of /proc/interrupts.
irqs=$(awk -v nic="$nic" -v alt="$alt" '
    $1 ~ /^[0-9]+:$/ {
        name = $NF
        if (name == nic || index(name, nic "-") == 1 || index(name, nic "@") == 1 ||
            (alt != "" && index(name, alt "-") == 1)) {
            sub(":", "", $1); print $1, name
        }
    }' /proc/interrupts)

if [ -z "$irqs" ]; then
    echo "no IRQs found for $nic${alt:+ ($alt)} in /proc/interrupts" >&2
    exit 1
fi

mode="DRY RUN (nothing written; add --apply)"
[ "$apply" -eq 1 ] && mode="APPLY"
echo "NIC $nic${alt:+ ($alt)}; online CPUs $online; keep free: ${keep:-none}; IRQs go to: ${allowed[*]}"
echo "mode: $mode"
printf '%-6s %-28s %-10s %-10s\n' IRQ NAME CURRENT NEW

if [ "$apply" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "error: --apply needs root" >&2
    exit 1
fi

i=0
failed=0
while read -r irq name; do
    cpu=${allowed[$((i % ${#allowed[@]}))]}
    i=$((i + 1))
    f=/proc/irq/$irq/smp_affinity_list
    cur=$(cat "$f" 2>/dev/null || echo "?")
    printf '%-6s %-28s %-10s %-10s\n' "$irq" "$name" "$cur" "$cpu"
    if [ "$apply" -eq 1 ]; then
        if ! echo "$cpu" > "$f" 2>/dev/null; then
            echo "  could not write $f (managed IRQ or not permitted)" >&2
            failed=$((failed + 1))
        fi
    fi
done <<< "$irqs"

if command -v pgrep >/dev/null 2>&1 && pgrep -x irqbalance >/dev/null 2>&1; then
    echo "note: irqbalance is running and may move these IRQs back; stop it or set IRQBALANCE_BANNED_CPULIST=$keep"
fi
if [ "$apply" -eq 0 ]; then
    echo "dry run: nothing changed."
fi
[ "$failed" -eq 0 ]
