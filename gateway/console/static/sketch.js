// Drawing (or uploading) an image for an image model's "Try it": a canvas of the input's
// height x width cells; the drawing is averaged per cell into ink levels scaled to the
// training data's range (0 blank, `maxValue` full ink), the form the model was trained on.

import { h } from "./dom.js";

const CELL = 20;

export function imagePad(height, width, channels, maxValue, onUse) {
  const canvas = h("canvas", {
    width: width * CELL,
    height: height * CELL,
    "data-testid": "sketch",
    "aria-label": `drawing area, ${height} by ${width}`,
    class: "sketch",
  });
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const clear = () => {
    context.fillStyle = "white";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  let drawing = false;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...at(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineWidth = CELL * 1.2;
    context.lineCap = "round";
    context.strokeStyle = "black";
    context.lineTo(...at(event));
    context.stroke();
  });
  const stop = () => {
    drawing = false;
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);

  const upload = h("input", {
    type: "file",
    id: "sketch-upload",
    accept: "image/*",
    onchange: async () => {
      const file = upload.files && upload.files[0];
      if (!file) return;
      const bitmap = await createImageBitmap(file);
      clear();
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    },
  });

  // Ink per cell: 1 - mean brightness, scaled to the training data's range.
  const values = () => {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const found = [];
    for (let row = 0; row < height; row++) {
      for (let column = 0; column < width; column++) {
        let ink = 0;
        for (let y = row * CELL; y < (row + 1) * CELL; y++) {
          for (let x = column * CELL; x < (column + 1) * CELL; x++) {
            const i = (y * canvas.width + x) * 4;
            ink += 1 - (pixels[i] + pixels[i + 1] + pixels[i + 2]) / (3 * 255);
          }
        }
        const level = Math.round((ink / (CELL * CELL)) * maxValue * 100) / 100;
        for (let c = 0; c < channels; c++) found.push(level);
      }
    }
    return found;
  };

  return h("section", { "aria-label": "Draw or upload an image" },
    h("h2", {}, "Draw or upload an image"),
    h("p", { class: "muted" }, `Ink is scaled to 0-${maxValue}, the range of the training data.`),
    canvas,
    h("div", { class: "inline" },
      h("button", { type: "button", class: "secondary", onclick: clear }, "Clear drawing"),
      " ",
      h("label", { for: "sketch-upload" }, "Upload an image "),
      upload,
      " ",
      h("button", { type: "button", onclick: () => onUse(values()) }, "Use the drawing")));
}
