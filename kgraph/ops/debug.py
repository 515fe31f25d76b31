"""Primitives that observe values rather than compute them."""
from .primitive import Primitive

print_tensor = Primitive("print_tensor")
print_tensor.prints = True  # the runtime adds its value as an extra output and prints it


@print_tensor.infer
def _(x, message):
    return x.shape, x.dtype


@print_tensor.lower
def _(ctx, node, x):
    return ctx.op("Identity", x)


print_tensor.vjp(lambda node, g: [g])
