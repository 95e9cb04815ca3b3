import sys
print("todo")
