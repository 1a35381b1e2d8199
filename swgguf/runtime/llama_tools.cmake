# swgguf compiles llama.cpp once: the wheel's CMake tree also builds the tools.
# This file runs right after project(llama.cpp) (CMAKE_PROJECT_llama.cpp_INCLUDE),
# so it applies to llama.cpp's targets and not to llama-cpp-python's own install rules.

# Link every target with its install RPATH (CMAKE_INSTALL_RPATH: the tools' folder),
# never the temporary build tree's.
set(CMAKE_BUILD_WITH_INSTALL_RPATH TRUE)

# llama.cpp's own install rules (headers, pkg-config, top-level lib/, and llama-server,
# whose rule is unconditional) go to a component the wheel leaves out
# (install.components=Unspecified keeps llama-cpp-python's llama_cpp/lib rules only).
set(CMAKE_INSTALL_DEFAULT_COMPONENT_NAME llama.cpp)
