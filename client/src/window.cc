#include "epx/window.h"

#include <utility>

#include "mapped_region.h"

namespace epx {

Window::Window(uint32_t id, std::shared_ptr<MappedRegion> region) : id_(id), region_(std::move(region)) {}
uint8_t* Window::data() const { return region_->data(); }
size_t Window::size() const { return region_->size(); }

}  // namespace epx
