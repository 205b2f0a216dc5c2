-- Workers fill an image in place: the Mandelbrot set, rendered in bands of
-- rows by a pool's tasks straight into one SharedArray of bytes (no pixel
-- is copied back through a result), which the host then writes out as a
-- PGM image (a grey-scale format any image viewer opens).
-- usage: bin/lua-futures examples/mandelbrot.lua [out.pgm] [width] [height]
--          [thread|process] [workers]
local futures = require "futures"

local path = arg and arg[1] or "mandelbrot.pgm"
local width = math.tointeger(tonumber(arg and arg[2])) or 640
local height = math.tointeger(tonumber(arg and arg[3])) or 480
local kind = arg and arg[4] or "thread"
local workers = math.tointeger(tonumber(arg and arg[5])) or futures.cpu_count()
local MAX_ITER = 255
local BAND = 8   -- rows per task

local image = futures.SharedArray("u8", width * height)

-- Rows y0..y1 of the view [-2.5, 1] x [-1.2, 1.2]: points of the set are
-- black, the others lighter the sooner they escape.
local function render(img, w, h, y0, y1, max_iter)
  for y = y0, y1 do
    local ci = (y - 1) / h * 2.4 - 1.2
    local row = (y - 1) * w
    for x = 1, w do
      local cr = (x - 1) / w * 3.5 - 2.5
      local zr, zi, i = 0.0, 0.0, 0
      while i < max_iter and zr * zr + zi * zi <= 4 do
        zr, zi = zr * zr - zi * zi + cr, 2 * zr * zi + ci
        i = i + 1
      end
      img[row + x] = i == max_iter and 0 or 255 - i * 255 // max_iter
    end
  end
end

local ex <close> = kind == "process" and futures.ProcessPoolExecutor(workers)
                                      or futures.ThreadPoolExecutor(workers)
local start = futures.monotonic()
local bands = {}
for y = 1, height, BAND do
  bands[#bands + 1] = ex:submit(render, image, width, height, y,
                                math.min(y + BAND - 1, height), MAX_ITER)
end
futures.wait(bands)
for _, f in ipairs(bands) do f:result() end   -- a band's error, if any
local elapsed = futures.monotonic() - start

local out = assert(io.open(path, "wb"))
out:write(("P5\n%d %d\n255\n"):format(width, height), image:tostring())
out:close()
print(("wrote %s: %dx%d pixels, %d bands on %d %s workers in %.2f s"):format(
  path, width, height, #bands, workers, kind, elapsed))
