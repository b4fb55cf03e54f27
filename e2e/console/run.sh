#!/usr/bin/env bash
# The admin console in a real browser (see e2e/browser.sh); screenshots in
# .cache/e2e/console-shots/. CONSOLE_ONLY=test_a,test_b runs those alone.
exec "$(dirname "$0")/../browser.sh" console
