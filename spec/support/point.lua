-- A class module, for the specs of how an object's class travels: by name,
-- as the module, so that the receiver gets its own class table back.
local Point = {}
Point.__index = Point
function Point.new(x) return setmetatable({ x = x }, Point) end
function Point:get() return self.x end
return Point
