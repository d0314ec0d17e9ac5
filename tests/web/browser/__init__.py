"""The dashboard in a real browser (Playwright driving Debian's Chromium)."""
