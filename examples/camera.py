"""Run an exported detector on a camera (or video file) and show the boxes: copy into your app.

Usage: ``python examples/camera.py export/tiny/model_int8.engine 0`` (camera 0), or
``python examples/camera.py export/tiny/model_fp32.onnx clip.mp4``. Esc or q quits.
"""

import sys
import time

import cv2

from edgeyolo import Detector

GREEN, RED, FONT = (0, 200, 0), (0, 0, 255), cv2.FONT_HERSHEY_SIMPLEX
model, source = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0"
cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
with Detector(model) as det:  # the thresholds the model was exported with
    t_last = time.perf_counter()
    while True:
        ok, frame = cap.read()  # BGR, any size
        if not ok:
            break
        d = det(frame)  # boxes in frame pixels
        boxes = d.boxes.astype(int)
        for (x1, y1, x2, y2), score, label in zip(boxes, d.scores, d.labels, strict=True):
            cv2.rectangle(frame, (x1, y1), (x2, y2), GREEN, 2)
            cv2.putText(frame, f"{label} {score:.2f}", (x1, max(y1 - 4, 10)), FONT, 0.5, GREEN)
        now = time.perf_counter()
        cv2.putText(frame, f"{1 / (now - t_last):.1f} FPS", (8, 20), FONT, 0.6, RED, 2)
        t_last = now
        cv2.imshow("edgeyolo", frame)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            break
cap.release()
cv2.destroyAllWindows()
