#!/usr/bin/env bash
# Installs the browser tests' npm packages (package-lock.json, exact
# versions) into DEST, a folder in the build tree, once per lock file: a
# later run with the same lock does nothing. playwright-core downloads no
# browser; the tests drive Debian's chromium.
#
#   npm_install.sh SOURCE_DIR DEST
set -euo pipefail
src=$1 dest=$2
mkdir -p "$dest"
if [[ -d $dest/node_modules ]] && cmp -s "$src/package-lock.json" "$dest/installed.lock"; then
    echo "npm_install.sh: packages already installed in $dest"
    exit 0
fi
cp "$src/package.json" "$src/package-lock.json" "$dest/"
rm -f "$dest/installed.lock"
cd "$dest"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
cp package-lock.json installed.lock
echo "npm_install.sh: installed $(ls node_modules | tr '\n' ' ')in $dest"
