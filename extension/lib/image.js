// An image from the context menu as its bytes, for a vision model: fetched from its URL with
// the person's cookies, typed from its first bytes (PNG, JPEG, GIF, WebP: what OpenAI and
// Gemini take), and refused with a plain reason past the size limit.

import { PdfFetchError, base64Of, fetchBytes } from "./pdf.js";

// Providers take at most 20 MB per image; the capture limit may be lower.
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;

function sniff(v) {
  if (v[0] === 0x89 && v[1] === 0x50 && v[2] === 0x4e && v[3] === 0x47) return "image/png";
  if (v[0] === 0xff && v[1] === 0xd8) return "image/jpeg";
  if (v[0] === 0x47 && v[1] === 0x49 && v[2] === 0x46) return "image/gif";
  if (v[0] === 0x52 && v[1] === 0x49 && v[2] === 0x46 && v[3] === 0x46 && v[8] === 0x57 && v[9] === 0x45) {
    return "image/webp";
  }
  return null;
}

class ImageCaptureError extends Error {}

// {content (base64), content_type, bytes}; ImageCaptureError says why not.
export async function fetchImage(url, { maxBytes }) {
  const limit = Math.min(maxBytes || MAX_IMAGE_BYTES, MAX_IMAGE_BYTES);
  let got;
  try {
    if (url.startsWith("data:")) {
      const resp = await fetch(url);
      got = { view: new Uint8Array(await resp.arrayBuffer()) };
      if (got.view.length > limit) throw new PdfFetchError(`the image is over the ${limit} byte limit`);
    } else {
      got = await fetchBytes(url, { maxBytes: limit, what: "the image" });
    }
  } catch (err) {
    throw new ImageCaptureError(err.message || String(err));
  }
  const type = sniff(got.view);
  if (!type) throw new ImageCaptureError("the image is not a PNG, JPEG, GIF or WebP file, which vision models take");
  return { content: base64Of(got.view), content_type: type, bytes: got.view.length };
}
