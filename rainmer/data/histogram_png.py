"""Draw a density histogram as a PNG with OpenCV (no plotting library needed)."""
import cv2
import numpy as np

_BAR, _AXIS, _TEXT = (200, 130, 60), (60, 60, 60), (30, 30, 30)  # BGR


def draw_histogram(counts: np.ndarray, edges: np.ndarray, title: str, width: int = 720,
                   height: int = 420) -> np.ndarray:
    """A white BGR image with one bar per bin (height = share of pairs), axis labels and the title."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 40, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    shares = counts / max(int(counts.sum()), 1)
    ymax = max(float(shares.max()), 1e-6)
    font = cv2.FONT_HERSHEY_SIMPLEX
    bar_w = plot_w / len(counts)
    for i, share in enumerate(shares):
        x0, x1 = int(left + i * bar_w + 2), int(left + (i + 1) * bar_w - 2)
        y0 = int(top + plot_h * (1 - share / ymax))
        cv2.rectangle(img, (x0, y0), (x1, top + plot_h), _BAR, thickness=-1)
        cv2.putText(img, f'{share:.2f}', (x0, max(top - 4, y0 - 4)), font, 0.35, _TEXT, 1, cv2.LINE_AA)
        cv2.putText(img, f'{edges[i]:.2f}', (x0, top + plot_h + 16), font, 0.35, _TEXT, 1, cv2.LINE_AA)
    cv2.line(img, (left, top + plot_h), (left + plot_w, top + plot_h), _AXIS, 1)
    cv2.line(img, (left, top), (left, top + plot_h), _AXIS, 1)
    cv2.putText(img, f'{ymax:.2f}', (8, top + 4), font, 0.4, _TEXT, 1, cv2.LINE_AA)
    cv2.putText(img, '0', (40, top + plot_h + 4), font, 0.4, _TEXT, 1, cv2.LINE_AA)
    cv2.putText(img, 'rain density (bin start)', (left + plot_w // 2 - 90, height - 30), font, 0.5, _TEXT, 1,
                cv2.LINE_AA)
    cv2.putText(img, 'share', (8, top + plot_h // 2), font, 0.45, _TEXT, 1, cv2.LINE_AA)
    cv2.putText(img, f'{title}  (n={int(counts.sum())})', (left, 24), font, 0.55, _TEXT, 1, cv2.LINE_AA)
    return img
