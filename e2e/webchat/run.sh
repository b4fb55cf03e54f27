#!/usr/bin/env bash
# The web chat page in a real browser (see e2e/browser.sh); screenshots in
# .cache/e2e/webchat-shots/. WEBCHAT_ONLY=test_a,test_b runs those alone.
exec "$(dirname "$0")/../browser.sh" webchat
