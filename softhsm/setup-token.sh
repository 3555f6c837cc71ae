#!/usr/bin/env bash
# Creates a project-local SoftHSM2 token for development and tests.
#
#   softhsm/setup-token.sh [STATE_DIR] [TOKEN_LABEL]     (defaults: .wallet-signer wallet-signer)
#
# Writes STATE_DIR/softhsm2.conf (from softhsm2.conf.template), the token under STATE_DIR/tokens,
# and random SO and user PINs in STATE_DIR/so-pin and STATE_DIR/user-pin (mode 0600). Idempotent:
# an existing token with that label is left alone. Use it with
#   export SOFTHSM2_CONF=STATE_DIR/softhsm2.conf
# Note: softhsm2-util takes PINs as arguments, so they are briefly visible to local `ps`; these are
# development tokens only. Real HSM PINs are set with the vendor's tools.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state_dir="${1:-.wallet-signer}"
label="${2:-wallet-signer}"

command -v softhsm2-util >/dev/null || bash "$here/install-deps.sh" softhsm2
umask 077
mkdir -p "$state_dir/tokens"
state_dir="$(cd "$state_dir" && pwd)"
conf="$state_dir/softhsm2.conf"
sed "s|^directories.tokendir = @TOKENDIR@|directories.tokendir = $state_dir/tokens|" "$here/softhsm2.conf.template" > "$conf"
export SOFTHSM2_CONF="$conf"

new_pin() {  # 16 hex digits from the kernel's CSPRNG, written once, mode 0600
    [ -s "$1" ] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$1"
    chmod 600 "$1"
}
new_pin "$state_dir/so-pin"
new_pin "$state_dir/user-pin"

if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^ *Label: *$label *$"; then
    echo "token '$label' already exists in $state_dir/tokens"
    exit 0
fi
softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$state_dir/so-pin")" --pin "$(cat "$state_dir/user-pin")" >/dev/null
echo "created token '$label' in $state_dir/tokens (SOFTHSM2_CONF=$conf, PIN in $state_dir/user-pin)"
