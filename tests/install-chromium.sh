#!/bin/sh
# Installs Debian's Chromium and a Japanese font (IPA Gothic), which the browser test of the HTML
# report (tests/test_report_browser.py) and its screenshot script (tests/report_screenshot.py)
# use. Without them that test is skipped, saying so. Needs root (or sudo) and Debian's archive.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO apt-get install -y chromium fonts-ipafont-gothic
chromium --version
fc-list :lang=ja family | sort -u
