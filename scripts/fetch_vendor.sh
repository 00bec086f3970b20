#!/usr/bin/env bash
# Re-create assets/vendor/ (the three JavaScript libraries bertviz's views need, with their
# licences) from the npm registry, and write assets/vendor/SOURCES.md with their sha256.
# The files are committed so the app works offline; run this only to update them.
# jQuery 2.0.0 (what bertviz names) is not on npm; 2.2.4 is API-compatible for bertviz.
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# The requirejs npm package ships no LICENSE file: keep its licence header and the MIT text it names.
requirejs_licence() {
  echo "RequireJS 2.3.6 (npm package requirejs@2.3.6, \"license\": \"MIT\" in its package.json)."
  echo "The package ships no LICENSE file; the header of require.js reads:"
  echo
  sed -n '1,4p' "$1"
  echo
  cat <<'MIT'
MIT License

Copyright jQuery Foundation and other contributors, https://jquery.org/

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
MIT
}

# package@version  file-in-package  saved-as  licence-file-in-package  licence
specs=(
  "requirejs@2.3.6 require.js require.js - MIT"
  "d3@5.7.0 dist/d3.min.js d3.min.js LICENSE BSD-3-Clause"
  "jquery@2.2.4 dist/jquery.min.js jquery.min.js LICENSE.txt MIT"
)

{
  echo "# Vendored JavaScript for bertviz views (offline)"
  echo
  echo "Fetched from the npm registry by \`scripts/fetch_vendor.sh\` (\`npm pack\`). Inlined into the"
  echo "bertviz iframe by \`viz/bertviz_html.py\`; nothing is loaded from a CDN."
  echo
  echo "| package | version | file | licence | licence file | sha256 |"
  echo "|---|---|---|---|---|---|"
} > "$tmp/SOURCES.md"

for spec in "${specs[@]}"; do
  read -r pkg file saved lic_file licence <<<"$spec"
  name=${pkg%@*}
  version=${pkg#*@}
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
  mkdir -p "$tmp/$name"
  tar -xzf "$tmp/$name-$version.tgz" -C "$tmp/$name"
  cp "$tmp/$name/package/$file" "$out/$saved"
  if [ "$lic_file" = - ]; then
    requirejs_licence "$tmp/$name/package/$file" > "$out/LICENSE-$name.txt"
  else
    cp "$tmp/$name/package/$lic_file" "$out/LICENSE-$name.txt"
  fi
  sum=$(sha256sum "$out/$saved" | cut -d' ' -f1)
  echo "| $name | $version | \`$saved\` (from \`$file\`) | $licence | \`LICENSE-$name.txt\` | \`$sum\` |" >> "$tmp/SOURCES.md"
done
cp "$tmp/SOURCES.md" "$out/SOURCES.md"
ls -l "$out"
