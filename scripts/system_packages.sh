#!/usr/bin/env bash
# Debian's packages the Jetson twin (scripts/twin.sh system) and the live-source tests (tests/live)
# use: the system's GStreamer OpenCV and numpy 1.x for python3, GStreamer 1.22 with H.264 and a
# gst-rtsp-server for a loopback RTSP stream. Idempotent; needs root (CI runs as root).
set -euo pipefail
pkgs=(python3-opencv python3-numpy python3-venv python3-pip python3-gi gstreamer1.0-tools
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
      gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
/usr/bin/python3 -c "import cv2, numpy, gi; print('system packages: python3', __import__('sys').version.split()[0], '| cv2', cv2.__version__, '| numpy', numpy.__version__)"
